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
