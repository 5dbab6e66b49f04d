"""The four families through the CLI: `rerankd models` lists them, `rerankd rank` loads each folder without
--family and orders as the library does, `rerankd eval` re-ranks a BEIR set with each (family options included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd import Reranker
from rerankd.cli import app
from tests.evaluation.conftest import write_beir

FAMILIES = {
    "lightweight_path": ("bge-gemma2-lightweight", ";compress_ratio=2;compress_layers=2+4"),
    "m3_path": ("bge-m3", ";score_weights=0.4+0.2+0.4"),
    "mxbai_path": ("mxbai-rerank-v2", ""),
    "colbert_path": ("colbert", ""),
}
DOCS = ["The giant panda is a bear of china.", "Paris is the capital city of france.", "Pandas eat bamboo."]


def test_models_lists_the_new_families() -> None:
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for family, _ in FAMILIES.values():
        assert family in result.output


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_rank_detects_and_orders_like_the_library(request: pytest.FixtureRequest, fixture: str, tmp_path: Path) -> None:
    path: Path = request.getfixturevalue(fixture)
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    query = "what is the giant panda?"
    result = CliRunner().invoke(
        app, ["rank", "-m", str(path), "-q", query, "-d", str(docs), "--json", "--dtype", "float32"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["family"] == FAMILIES[fixture][0]
    library = Reranker.from_pretrained(str(path), device="cpu", dtype="float32").rank(query, DOCS)
    assert [r["index"] for r in report["results"]] == [r.index for r in library]
    assert [r["score"] for r in report["results"]] == pytest.approx([r.score for r in library], abs=1e-5)


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_eval_reranks_with_each_family(request: pytest.FixtureRequest, fixture: str, tmp_path: Path) -> None:
    path: Path = request.getfixturevalue(fixture)
    beir = write_beir(tmp_path / "beir")
    spec = str(path) + FAMILIES[fixture][1]
    runs = tmp_path / "runs"
    args = ["eval", str(beir), "-m", spec, "--json", "--top-k", "5", "--resamples", "100", "--save-runs", str(runs)]
    result = CliRunner().invoke(app, [*args, "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    reranker = report["systems"][1]
    assert reranker["role"] == "reranker" and 0.0 <= reranker["means"]["ndcg@10"] <= 1.0
    run_lines = [line for file in runs.iterdir() for line in file.read_text(encoding="utf-8").splitlines()]
    assert len(run_lines) >= 6 * 5
