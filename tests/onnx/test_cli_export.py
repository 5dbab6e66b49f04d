"""`rerankd export --onnx MODEL OUT` end to end, in-process with typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.families.base import ModelOptions
from tests.onnx.conftest import load
from tests.tiny_models import corpus


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_export_then_load_with_the_onnx_backend(runner: CliRunner, bert_ce: Path, tmp_path: Path) -> None:
    out = tmp_path / "bert-onnx"
    result = runner.invoke(app, ["export", "--onnx", str(bert_ce), str(out), "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.output and "model_int8.onnx" in result.output
    assert (out / "model.onnx").is_file() and (out / "model_int8.onnx").is_file() and (out / "config.json").is_file()
    pairs = [("what is the giant panda?", doc) for doc in corpus(seed=5, n=8, min_words=3, max_words=30)]
    got = np.array(load(out, ModelOptions(backend="onnx")).score(pairs))
    want = np.array(load(bert_ce).score(pairs))
    assert np.abs(got - want).max() <= 1e-4


def test_existing_export_needs_force(runner: CliRunner, xlmr_ce: Path, tmp_path: Path) -> None:
    out = tmp_path / "xlmr-onnx"
    assert runner.invoke(app, ["export", "--onnx", str(xlmr_ce), str(out)]).exit_code == 0
    again = runner.invoke(app, ["export", "--onnx", str(xlmr_ce), str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, ["export", "--onnx", str(xlmr_ce), str(out), "--force"]).exit_code == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--onnx"),  # no format chosen
        (["--onnx", "--quantize", "int4"], "int8"),
    ],
)
def test_bad_flags(runner: CliRunner, bert_ce: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["export", *extra, str(bert_ce), str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_missing_model_folder(runner: CliRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["export", "--onnx", str(empty), str(tmp_path / "out")])
    assert result.exit_code == 2 and "config.json" in result.output
