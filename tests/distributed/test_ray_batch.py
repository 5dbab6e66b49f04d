"""`rerankd batch --ray` on a local Ray: Ray Data with a pool of model actors gives `Reranker.score`'s scores, in
input order, and resumes from the shards an earlier run wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd import Reranker
from rerankd.batch import JobSpec, open_job, run_local, step_rows
from rerankd.batch.outputs import write_shard
from rerankd.cli import app
from tests.batch.conftest import BATCH_TOKENS, write_pairs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
TOLERANCE = 1e-5  # the library's batch-invariance bound


@pytest.fixture(scope="module")
def tiny(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32", batch_tokens=BATCH_TOKENS)


def test_ray_data_two_actors_match_reranker_score_and_local(
    local_ray: Any, tmp_path: Path, bert_ce: Path, tiny: Reranker
) -> None:
    records = write_pairs(tmp_path / "pairs.jsonl", 500, seed=11)
    flags = ["-m", str(bert_ce), "--device", "cpu", "--dtype", "float32", "--batch-tokens", str(BATCH_TOKENS)]
    runner = CliRunner()
    on_ray = runner.invoke(
        app,
        ["batch", str(tmp_path / "pairs.jsonl"), "-o", str(tmp_path / "ray.jsonl"), "--ray", "local", "--actors", "2",
         "--shard-rows", "100", *flags],
    )  # fmt: skip
    assert on_ray.exit_code == 0, on_ray.output
    here = runner.invoke(app, ["batch", str(tmp_path / "pairs.jsonl"), "-o", str(tmp_path / "local.jsonl"), *flags])
    assert here.exit_code == 0, here.output
    ray_rows = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    local_rows = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [row["id"] for row in ray_rows] == [r["id"] for r in records] == [row["id"] for row in local_rows]
    want = np.array(tiny.score([(r["query"], r["document"]) for r in records]))
    assert np.abs(np.array([row["score"] for row in ray_rows]) - want).max() <= TOLERANCE
    assert np.abs(np.array([row["score"] for row in local_rows]) - want).max() <= TOLERANCE


def test_ray_run_resumes_from_the_shards_on_disk(local_ray: Any, tmp_path: Path, tiny: Reranker) -> None:
    from rerankd.distributed.batch import run_on_ray

    write_pairs(tmp_path / "pairs.jsonl", 400, seed=12)
    load = {"device": "cpu", "dtype": "float32", "batch_tokens": BATCH_TOKENS}
    reference = JobSpec(tmp_path / "pairs.jsonl", tmp_path / "reference.jsonl", "tiny", load, shard_rows=100)
    run_local(open_job(reference, lambda sample: step_rows(tiny, sample)), tiny)

    spec = JobSpec(tmp_path / "pairs.jsonl", tmp_path / "resumed.jsonl", str(tiny.info.path), load, shard_rows=100)
    job = open_job(spec, lambda sample: step_rows(tiny, sample))
    assert job.shards >= 2
    first = job.read_shard(0)  # an earlier run finished shard 0, then died
    write_shard(job.shard_path(0), "jsonl", first, tiny.score([(r.query, r.document) for r in first]), job.scan)
    scored: list[int] = []
    run_on_ray(job, actors=1, progress=scored.append)
    assert sum(scored) == 400 - len(first)  # shard 0 is not scored again
    mine = [json.loads(line) for line in (tmp_path / "resumed.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (tmp_path / "reference.jsonl").read_text().splitlines()]
    assert [row["id"] for row in mine] == [row["id"] for row in theirs]
    assert np.abs(np.array([r["score"] for r in mine]) - np.array([r["score"] for r in theirs])).max() <= TOLERANCE
