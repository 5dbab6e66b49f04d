"""``rerankd eval``, ``compare`` and ``smoke`` end to end through typer's CliRunner: JSON values and PNG files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from tests.evaluation.test_with_models import PINNED_BM25, PINNED_MINILM

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = pytest.importorskip("matplotlib.image").imread(path)  # decodes the whole file
    assert image.shape[0] > 300 and image.shape[1] > 600


def test_eval_cli_json_plot_and_runs(beir_dir: Path, tmp_path: Path) -> None:
    plot, output, runs = tmp_path / "eval.png", tmp_path / "eval.json", tmp_path / "runs"
    args = ["eval", str(beir_dir), "-m", "all-MiniLM-L6-v2", "--json", "--plot", str(plot), "-o", str(output)]
    result = runner.invoke(app, [*args, "--save-runs", str(runs), "--resamples", "1000"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads(output.read_text())
    assert report["n_queries"] == 6 and report["top_k"] == 100
    first, reranked = report["systems"]
    assert (first["name"], first["role"], reranked["name"]) == ("bm25", "first stage", "all-MiniLM-L6-v2")
    assert first["means"] == pytest.approx(PINNED_BM25, abs=1e-4)
    assert reranked["means"] == pytest.approx(PINNED_MINILM, abs=1e-4)
    assert reranked["per_query"]["q7"]["ndcg@1"] == 1.0
    (comparison,) = report["comparisons"]
    assert (comparison["wins"], comparison["ties"], comparison["losses"]) == (3, 3, 0)
    assert_valid_png(plot)
    assert sorted(p.name for p in runs.iterdir()) == ["all-MiniLM-L6-v2.trec", "bm25.trec"]


def test_eval_cli_run_file_first_stage_only_prints_tables(beir_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d01 1 3.0 x\nq1 Q0 d12 2 2.0 x\nq2 Q0 d05 1 1.0 x\n", encoding="utf-8")
    result = runner.invoke(
        app, ["eval", str(beir_dir), "--run", str(run), "--first-stage-only", "-o", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.output
    assert "run:run.trec" in result.stdout and "ndcg@10" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["systems"][0]["means"]["ndcg@1"] == pytest.approx(1 / 6)  # q1 right, 5 queries missed


def test_eval_cli_per_model_options(beir_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("RERANKD_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    specs = [
        "all-MiniLM-L6-v2;dtype=float32",
        "all-MiniLM-L6-v2; backend=onnx",
        "all-MiniLM-L6-v2;backend=onnx;quantize=int8",
    ]
    args = ["eval", str(beir_dir), "--json", "--resamples", "1000"]
    runs = tmp_path / "runs"
    result = runner.invoke(app, [*args, *[flag for spec in specs for flag in ("-m", spec)], "--save-runs", str(runs)])
    assert result.exit_code == 0, result.output
    _bm25, fp32, onnx, int8 = json.loads(result.stdout)["systems"]
    assert [fp32["name"], onnx["name"], int8["name"]] == specs
    assert fp32["means"] == pytest.approx(PINNED_MINILM, abs=1e-4)
    assert onnx["means"] == pytest.approx(PINNED_MINILM, abs=1e-4)  # same weights, same graph: same ranking
    assert set(int8["means"]) == set(PINNED_MINILM)
    names = sorted(path.name for path in runs.iterdir())
    assert "all-MiniLM-L6-v2_backend=onnx_quantize=int8.trec" in names and len(names) == 4
    scores = {name: [float(line.split()[4]) for line in (runs / name).read_text().splitlines()] for name in names}
    fp32_scores = scores["all-MiniLM-L6-v2_dtype=float32.trec"]
    int8_scores = scores["all-MiniLM-L6-v2_backend=onnx_quantize=int8.trec"]
    assert len(int8_scores) == len(fp32_scores) and int8_scores != fp32_scores  # each spec's options reached its load
    bad = runner.invoke(app, [*args, "-m", "all-MiniLM-L6-v2;precision=int8"])
    assert bad.exit_code == 2 and "unknown key 'precision'" in bad.output


def test_eval_cli_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "missing"), "--first-stage-only"])
    assert result.exit_code == 2
    assert "no such dataset folder" in result.output


def test_compare_cli_fp32_against_bf16(bert_ce: Path, tmp_path: Path) -> None:
    plot = tmp_path / "compare.png"
    args = ["compare", "-m", str(bert_ce), "--device", "cpu", "--a", "dtype=float32", "--b", "dtype=bfloat16"]
    result = runner.invoke(app, [*args, "--json", "--plot", str(plot)])
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["passed"] else 1)
    assert (report["label_a"], report["label_b"]) == ("A: dtype=float32", "B: dtype=bfloat16")
    assert report["overall"]["cosine"] > 0.999
    assert 0 < report["overall"]["mae"] < 0.1
    assert len(report["inputs"]) == 5 and len(report["values_a"]) == 70
    names = ["spearman (mean per query)", "max error / spread", "mean relative error (|A| >= 10% of spread)"]
    assert [check["name"] for check in report["checks"]] == names
    assert_valid_png(plot)


def test_compare_cli_identical_configurations_pass(bert_ce: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"query": "what is panda?", "document": d} for d in ("The giant panda is a bear.", "hi", "Paris.")]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    output = tmp_path / "same.json"
    result = runner.invoke(app, ["compare", "-m", str(bert_ce), "--pairs", str(pairs), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    report = json.loads(output.read_text())
    assert report["passed"] is True
    assert report["overall"]["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert report["overall"]["mae"] == 0.0
    bad = runner.invoke(app, ["compare", "-m", str(bert_ce), "--pairs", str(pairs), "--a", "colour=red"])
    assert bad.exit_code == 2 and "unknown key 'colour'" in bad.output


def test_smoke_cli_with_real_minilm(tmp_path: Path) -> None:
    output = tmp_path / "smoke.json"
    result = runner.invoke(app, ["smoke", "all-MiniLM-L6-v2", "--repeats", "2", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "what is the capital of France?" in result.stdout
    assert "overall: PASS" in result.stdout and "throughput" in result.stdout
    report = json.loads(output.read_text())
    assert report["passed"] is True and len(report["results"]) == 3
    assert all(row["passed"] for row in report["results"])
    assert report["load_seconds"] > 0 and report["mean_latency_s"] > 0 and report["throughput_per_s"] > 0
