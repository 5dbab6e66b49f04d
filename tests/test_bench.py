from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rerankd.bench.run import matmul_peak_gflops, run_bench
from rerankd.bench.workloads import rerank_100
from rerankd.builder import LoadOptions
from rerankd.cli import app


def test_rerank_100_matches_the_benchmark_plan() -> None:
    work = rerank_100()
    assert len(work.queries) == 1 and len(work.documents[0]) == 100
    words = [len(d.split()) for d in work.documents[0]]
    assert min(words) >= 61 and max(words) <= 205
    assert 120 <= sum(words) / 100 <= 145
    assert rerank_100().pairs == work.pairs  # seeded: identical every time


def test_bench_report_on_a_tiny_cross_encoder(bert_ce: Path) -> None:
    report = run_bench(str(bert_ce), LoadOptions(device="cpu", dtype="float32"), "rerank-100", runs=1)
    assert report.pairs == 100 and report.family == "cross-encoder" and report.dtype == "float32"
    assert 0 < report.latency_p50_ms <= report.latency_p99_ms
    assert report.throughput_pairs_s > 0 and report.first_result_s >= report.load_s
    assert report.tokens_per_pair == pytest.approx(128, abs=1)  # every pair fills the tiny model's 128 tokens
    assert report.padding_waste == pytest.approx(0.0, abs=1e-9)
    assert report.achieved_gflops is not None and report.achieved_gflops > 0
    assert report.peak_rss_mb > 10


def test_matmul_peak_is_measured() -> None:
    assert matmul_peak_gflops(torch.float32, torch.device("cpu"), seconds=0.05, sizes=(256,), trials=1) > 0.1


def test_bench_cli_json(bert_ce: Path) -> None:
    result = CliRunner().invoke(app, ["bench", str(bert_ce), "--runs", "1", "--json", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert payload["workload"] == "rerank-100" and payload["pairs"] == 100


def test_bench_cli_unknown_workload() -> None:
    result = CliRunner().invoke(app, ["bench", "x", "--workload", "nope"])
    assert result.exit_code == 2 and "unknown workload" in result.output


def test_flop_count_leaves_out_the_skipped_last_layer_rows(bert_ce: Path) -> None:
    """The trimmed last layer runs Q, output, FFN and attention for one row; K and V for every row."""
    from rerankd import Reranker
    from rerankd.bench.run import _work

    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    lengths = [40, 40, 40]
    _, trimmed = _work(reranker, lengths)
    layers = reranker.family.model.base_model.encoder.layer  # type: ignore[union-attr]
    wrapper = layers[-1]
    layers[-1] = wrapper.layer  # the stock layer
    _, full = _work(reranker, lengths)
    layers[-1] = wrapper
    hidden = reranker.family.model.config.hidden_size  # type: ignore[union-attr]
    attention = wrapper.layer.attention.self
    shared = sum(p.numel() for p in (*attention.key.parameters(), *attention.value.parameters()))
    first_only = sum(p.numel() for p in wrapper.parameters()) - shared
    expected = 3 * 39 * (2 * first_only + 4 * hidden * 40) / 1e9
    assert full is not None and trimmed is not None
    assert full - trimmed == pytest.approx(expected, rel=1e-9)


def test_peak_is_probed_with_the_model_gemms_between_passes(bert_ce: Path) -> None:
    from rerankd.bench.run import model_gemms

    report = run_bench(str(bert_ce), LoadOptions(device="cpu", dtype="float32"), "rerank-100", runs=2)
    assert report.peak_trials == 3  # before each pass and after the last
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    hidden = reranker.family.model.config.hidden_size  # type: ignore[union-attr]
    intermediate = reranker.family.model.config.intermediate_size  # type: ignore[union-attr]
    gemms = model_gemms(reranker, [128] * 100)
    assert gemms is not None
    tokens = gemms[0][0]
    assert tokens == 128 * min(100, reranker.budget.max_tokens // 128, reranker.budget.max_batch_size)
    assert gemms[0] == (tokens, hidden, hidden) and len(gemms) == 6
    assert abs(gemms[4][2] - intermediate) <= intermediate * 0.1  # derived from the parameter count
    assert report.peak_shapes.startswith(f"{tokens}x{hidden} @ {hidden}x{hidden}")
    assert report.peak_reliable == (report.peak_fraction is not None and report.peak_fraction <= 1.0)


def test_a_fraction_above_the_peak_is_flagged(monkeypatch: pytest.MonkeyPatch, bert_ce: Path) -> None:
    from dataclasses import replace

    import rerankd.bench.run as bench_run

    real = run_bench(str(bert_ce), LoadOptions(device="cpu", dtype="float32"), "rerank-100", runs=1)
    figures = {"achieved_gflops": 131.9, "matmul_peak_gflops": 85.0, "peak_fraction": 131.9 / 85.0}
    fast = replace(real, **figures, peak_reliable=False)  # the figures
    monkeypatch.setattr(bench_run, "run_bench", lambda *a, **k: fast)
    result = CliRunner().invoke(app, ["bench", str(bert_ce), "--runs", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "fraction of peak" in line)
    assert "155%" in line and "probe unreliable" in line
    payload = CliRunner().invoke(app, ["bench", str(bert_ce), "--runs", "1", "--json"]).output
    assert json.loads(payload[payload.index("{") :])["peak_reliable"] is False
