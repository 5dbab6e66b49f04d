"""``backend`` and ``quantize`` reach every front end: settings/env, `rank`, `compare`, `bench` and `serve`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.settings import Settings
from tests.server.conftest import serve
from tests.tiny_models import corpus

QUERY = "what is the giant panda?"


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def docs_file(tmp_path: Path) -> Path:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(corpus(seed=11, n=8, min_words=3, max_words=30)) + "\n", encoding="utf-8")
    return path


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_BACKEND", "onnx")
    monkeypatch.setenv("RERANKD_QUANTIZE", "int8")
    monkeypatch.setenv("RERANKD_DTYPE_GUARD", "false")
    options = Settings().load_options()
    assert (options.model.backend, options.model.quantize, options.dtype_guard) == ("onnx", "int8", False)
    monkeypatch.setenv("RERANKD_QUANTIZE", "none")
    assert Settings().quantize is None
    with pytest.raises(ValueError, match="backend"):
        Settings(backend="tensorrt")
    with pytest.raises(ValueError, match="quantize"):
        Settings(quantize="int4")


def _ranked(runner: CliRunner, model: Path, docs: Path, *flags: str) -> dict[int, float]:
    result = runner.invoke(app, ["rank", "-q", QUERY, "-d", str(docs), "-m", str(model), "--json", "--raw", *flags])
    assert result.exit_code == 0, result.output
    return {item["index"]: item["score"] for item in json.loads(result.output)["results"]}


def test_rank_with_the_onnx_backend_equals_torch(runner: CliRunner, bert_ce: Path, docs_file: Path) -> None:
    torch_scores = _ranked(runner, bert_ce, docs_file, "--dtype", "float32")
    onnx_scores = _ranked(runner, bert_ce, docs_file, "--backend", "onnx")
    assert list(onnx_scores) == list(torch_scores)  # same order
    assert max(abs(onnx_scores[i] - torch_scores[i]) for i in torch_scores) <= 1e-4
    int8 = _ranked(runner, bert_ce, docs_file, "--backend", "onnx", "--quantize", "int8")
    assert set(int8) == set(torch_scores) and int8 != onnx_scores  # quantisation really ran


def test_rank_rejects_an_unknown_backend(runner: CliRunner, bert_ce: Path, docs_file: Path) -> None:
    result = runner.invoke(app, ["rank", "-q", QUERY, "-d", str(docs_file), "-m", str(bert_ce), "--backend", "trt"])
    assert result.exit_code == 2 and "backend" in result.output


def test_compare_int8_against_float32(runner: CliRunner, bert_ce: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["compare", "-m", str(bert_ce), "--a", "dtype=float32", "--b", "backend=onnx", "--b", "quantize=int8"]
    result = runner.invoke(app, [*args, "--json", "--output", str(out)])
    assert result.exit_code in (0, 1), result.output  # PASS or FAIL, never an error
    report = json.loads(out.read_text())
    assert "backend=onnx" in report["label_b"] and "quantize=int8" in report["label_b"]
    a, b = np.array(report["values_a"]), np.array(report["values_b"])
    assert 0 < np.abs(a - b).max() < 0.5 * (a.max() - a.min())  # int8 moved the scores, a little
    bad = runner.invoke(app, [*args[:-1], "quantize=int4"])
    assert bad.exit_code == 2 and "int8" in bad.output


def test_bench_names_the_backend(runner: CliRunner, bert_ce: Path) -> None:
    flags = ["--runs", "1", "--json", "--backend", "onnx", "--quantize", "int8"]
    result = runner.invoke(app, ["bench", str(bert_ce), *flags])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["backend"], report["quantize"], report["dtype"]) == ("onnx", "int8", "float32")
    assert report["achieved_gflops"] is None and report["throughput_pairs_s"] > 0  # no float peak for int8
    bad = runner.invoke(app, ["bench", str(bert_ce), "--runs", "1", "--backend", "trt"])
    assert bad.exit_code == 2 and "backend" in bad.output


def test_serve_loads_the_configured_backend(bert_ce: Path) -> None:
    settings = Settings(models=(f"tiny={bert_ce}",), backend="onnx", quantize="int8", cache="none")
    with serve(settings) as server:
        card = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]
        reply = httpx.post(server.url + "/rerank", json={"query": QUERY, "documents": ["a panda", "hi"]}, timeout=30)
    assert (card["id"], card["backend"], card["quantize"], card["dtype"]) == ("tiny", "onnx", "int8", "float32")
    assert reply.status_code == 200 and len(reply.json()["results"]) == 2
