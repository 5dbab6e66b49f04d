"""`rerankd batch` in one process: every input and output kind, scores equal to `Reranker.score`, job state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rerankd import Reranker
from rerankd.batch import JobSpec, open_job, run_local, step_rows
from rerankd.batch.job import Journal
from rerankd.cli import app
from rerankd.errors import InvalidInput
from tests.batch.conftest import BATCH_TOKENS, write_beir, write_pairs

TOLERANCE = 1e-5  # the library's own batch-invariance bound: a pair's score may move this much with its batch


def batch(runner: CliRunner, model: Path, *args: str) -> str:
    flags = ["--device", "cpu", "--dtype", "float32", "--batch-tokens", str(BATCH_TOKENS)]
    result = runner.invoke(app, ["batch", *args, "-m", str(model), *flags])
    assert result.exit_code == 0, result.output
    return result.output


def test_jsonl_pairs_keep_ids_and_match_reranker_score(tmp_path: Path, bert_ce: Path, small_steps: Reranker) -> None:
    records = write_pairs(tmp_path / "pairs.jsonl", 300)
    out = tmp_path / "scores.jsonl"
    batch(CliRunner(), bert_ce, str(tmp_path / "pairs.jsonl"), "-o", str(out), "--shard-rows", "100")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    assert set(rows[0]) == {"id", "score"}
    want = small_steps.score([(r["query"], r["document"]) for r in records])
    assert np.abs(np.array([row["score"] for row in rows]) - np.array(want)).max() <= TOLERANCE
    assert not (tmp_path / "scores.jsonl.rerankd-job").exists()  # state removed once the output is whole


def test_job_cuts_steps_from_the_token_budget(tmp_path: Path, small_steps: Reranker) -> None:
    write_pairs(tmp_path / "pairs.jsonl", 800)
    spec = JobSpec(tmp_path / "pairs.jsonl", tmp_path / "out.jsonl", "tiny")
    job = open_job(spec, lambda sample: step_rows(small_steps, sample))
    tokens = [small_steps.count_tokens(row.query, [row.document])[0] for row in job.read_shard(0)[:256]]
    assert job.step_rows == int(32 * BATCH_TOKENS / np.mean(tokens))  # 32 forward passes of the budget per step
    assert job.shard_rows == 4 * job.step_rows and job.shards == -(-800 // job.shard_rows) > 1
    assert [job.shard_size(k) for k in range(job.shards)][-1] == 800 - (job.shards - 1) * job.shard_rows
    assert sum(len(job.read_shard(k)) for k in range(job.shards)) == 800  # the cursors cut the input exactly


def test_parquet_in_parquet_out_default_ids(tmp_path: Path, bert_ce: Path, small_steps: Reranker) -> None:
    records = write_pairs(tmp_path / "pairs.jsonl", 120, seed=3, ids=False)
    table = pa.table({"query": [r["query"] for r in records], "document": [r["document"] for r in records]})
    pq.write_table(table, tmp_path / "pairs.parquet", row_group_size=25)  # cursors land inside row groups
    batch(CliRunner(), bert_ce, str(tmp_path / "pairs.parquet"), "-o", str(tmp_path / "out.parquet"))
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("id").type == pa.int64() and out.column_names == ["id", "score"]
    assert out.column("id").to_pylist() == list(range(120))
    want = small_steps.score([(r["query"], r["document"]) for r in records])
    assert np.abs(np.array(out.column("score").to_pylist()) - np.array(want)).max() <= TOLERANCE


def test_groups_to_trec_run(tmp_path: Path, bert_ce: Path, small_steps: Reranker) -> None:
    groups = [
        {"query_id": "q-a", "query": "panda bamboo", "candidates": ["panda eats bamboo", "paris", "tea river"]},
        {"query": "capital of france", "candidates": [{"id": "x", "text": "paris capital"}, {"text": "panda"}]},
    ]
    (tmp_path / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    batch(CliRunner(), bert_ce, str(tmp_path / "groups.jsonl"), "-o", str(tmp_path / "run.trec"), "--tag", "t1")
    lines = [line.split() for line in (tmp_path / "run.trec").read_text().splitlines()]
    for qid, group in (("q-a", groups[0]), ("1", groups[1])):
        docs = [c if isinstance(c, str) else c["text"] for c in group["candidates"]]
        ranked = small_steps.rank(group["query"], docs)
        names = [str(i) if isinstance(c, str) or "id" not in c else c["id"] for i, c in enumerate(group["candidates"])]
        mine = [line for line in lines if line[0] == qid]
        assert [line[2] for line in mine] == [names[r.index] for r in ranked]
        assert [int(line[3]) for line in mine] == list(range(1, len(docs) + 1))
        assert [float(line[4]) for line in mine] == pytest.approx([r.score for r in ranked], abs=TOLERANCE)
        assert {line[1] for line in mine} == {"Q0"} and {line[5] for line in mine} == {"t1"}


def test_beir_folder_and_run_rerank_top_k(tmp_path: Path, bert_ce: Path, small_steps: Reranker) -> None:
    data = write_beir(tmp_path / "beir")
    run_lines = [line.split() for line in (tmp_path / "beir" / "run.trec").read_text().splitlines()]
    out = tmp_path / "reranked.trec"
    batch(CliRunner(), bert_ce, str(tmp_path / "beir"), "--run", str(tmp_path / "beir" / "run.trec"), "--top-k", "5",
          "-o", str(out))  # fmt: skip
    lines = [line.split() for line in out.read_text().splitlines()]
    assert list(dict.fromkeys(line[0] for line in lines)) == ["q3", "q2", "q1", "q0"]  # the run's query order
    for qid, query in data["queries"].items():
        top = [line[2] for line in run_lines if line[0] == qid][:5]  # the run's top 5 by run score
        mine = [line for line in lines if line[0] == qid]
        assert sorted(line[2] for line in mine) == sorted(top)
        want = small_steps.score([(query, data["corpus"][line[2]]) for line in mine])
        assert [float(line[4]) for line in mine] == pytest.approx(want, abs=TOLERANCE)
        assert [float(line[4]) for line in mine] == sorted((float(line[4]) for line in mine), reverse=True)


def test_journal_drops_a_torn_last_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "part.journal")
    journal.append(0, [0.25, 0.5])
    journal.append(1, [0.75])
    whole = journal.path.stat().st_size
    with journal.path.open("ab") as handle:
        handle.write(b'{"step": 2, "scores": [0.1')  # a kill in the middle of a write
    assert journal.load() == [[0.25, 0.5], [0.75]]
    assert journal.path.stat().st_size == whole


def test_resume_refuses_other_arguments_and_existing_output(tmp_path: Path, small_steps: Reranker) -> None:
    write_pairs(tmp_path / "pairs.jsonl", 50)
    spec = JobSpec(tmp_path / "pairs.jsonl", tmp_path / "out.jsonl", "tiny", reranker={"normalize": True})
    open_job(spec, lambda sample: step_rows(small_steps, sample))
    other = JobSpec(tmp_path / "pairs.jsonl", tmp_path / "out.jsonl", "tiny", reranker={"normalize": False})
    with pytest.raises(InvalidInput, match="differs in: reranker"):
        open_job(other, lambda sample: 10)
    job = open_job(other, lambda sample: step_rows(small_steps, sample), restart=True)
    run_local(job, small_steps)
    with pytest.raises(InvalidInput, match="already exists"):
        open_job(other, lambda sample: 10)


def test_trec_output_needs_each_querys_rows_together(tmp_path: Path, bert_ce: Path) -> None:
    rows = [{"query_id": q, "id": i, "query": "panda", "document": "bear"} for i, q in enumerate(["a", "b", "a"])]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["-m", str(bert_ce), "--device", "cpu"]
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "pairs.jsonl"), "-o", str(tmp_path / "x.trec"), *flags])
    assert result.exit_code == 2
    assert "query 'a' comes back later" in result.output
