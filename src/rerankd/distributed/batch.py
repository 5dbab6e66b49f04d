"""``rerankd batch --ray``: a batch job's pending shards through Ray Data.

The pipeline is ``shards -> read (tasks) -> score (actor pool) -> this process``:

- one input block per scoring step of the pending shards; a read task opens the source at the shard's cursor
  (so every worker needs the input path: a local file on one machine, a shared filesystem on a cluster) and emits
  the step's pairs;
- ``map_batches`` over an actor pool scores them: each actor loads the model once (``num_cpus`` /
  ``num_gpus`` each), and a batch holds one scoring *step* of the job (``Job.step_rows``: the pairs that fill
  32 forward passes of the model's token budget, from a sample of the input's token counts), which the actor
  scores with ``Reranker.score``, i.e. rerankd's own length-sorted, token-budgeted batches;
- the driver (this process) receives the scores in input order (``preserve_order``) and writes each shard
  atomically as soon as all of its rows are in, exactly as the local runner does; a killed driver restarted
  with the same arguments resumes from the shards that exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from rerankd.batch.job import Job
from rerankd.batch.outputs import write_shard
from rerankd.batch.sources import Cursor, PairRow
from rerankd.distributed.cluster import connect

logger = logging.getLogger(__name__)
Progress = Callable[[int], None]
Columns = dict[str, Any]


class StepReader:
    """A read task's function: the pairs of the (shard, step) items of a batch, with their place in the output."""

    def __init__(self, job: Job) -> None:
        self.source = job.source
        self.step_rows = job.step_rows
        self.cursors: dict[int, Cursor] = {k: job.scan.cursors[k] for k in job.pending()}
        self.sizes = {k: job.shard_size(k) for k in self.cursors}

    def __call__(self, batch: Columns) -> Columns:
        out: dict[str, list[Any]] = {name: [] for name in ("shard", "row", "id", "query_id", "query", "document")}
        for shard, step in zip((int(k) for k in batch["shard"]), (int(j) for j in batch["step"]), strict=True):
            first = step * self.step_rows
            rows = self.source.read(self.cursors[shard], min(self.sizes[shard], first + self.step_rows))
            for position, row in enumerate(rows):
                if position < first:
                    continue
                out["shard"].append(shard)
                out["row"].append(position)
                out["id"].append(json.dumps(row.id))  # ids of any JSON type travel as text, decoded by the driver
                out["query_id"].append(json.dumps(row.query_id))
                out["query"].append(row.query)
                out["document"].append(row.document)
        return out


class PairScorer:
    """An actor of the pool: one model, loaded once; scores one step of pairs per call."""

    def __init__(self, model: str, load: dict[str, Any], threads: int) -> None:
        import torch
        from transformers.utils import logging as transformers_logging

        from rerankd import Reranker

        transformers_logging.disable_progress_bar()  # this is the actor's own process: keep its log readable
        self.reranker = Reranker.from_pretrained(model, **load)
        if str(self.reranker.info.device).startswith("cpu"):
            torch.set_num_threads(max(1, threads))  # the actor's CPU share, not every core of the node

    def __call__(self, batch: Columns) -> Columns:
        pairs = list(zip(batch["query"].tolist(), batch["document"].tolist(), strict=True))
        scores = np.asarray(self.reranker.score(pairs), dtype=np.float64)
        keep = ("shard", "row", "id", "query_id")
        return {**{name: batch[name] for name in keep}, "score": scores}


class ShardCollector:
    """Fills each shard's rows as scored batches arrive; writes a shard the moment it is whole."""

    def __init__(self, job: Job, progress: Progress | None) -> None:
        self.job = job
        self.progress = progress or (lambda n: None)
        self.rows: dict[int, list[PairRow]] = {}
        self.scores: dict[int, list[float]] = {}
        self.missing: dict[int, int] = {}

    def add(self, batch: Columns) -> None:
        columns = (batch["shard"], batch["row"], batch["id"], batch["query_id"], batch["score"])
        for shard, row, row_id, query_id, score in zip(*columns, strict=True):
            shard, row = int(shard), int(row)
            if shard not in self.missing:
                size = self.job.shard_size(shard)
                self.rows[shard], self.scores[shard], self.missing[shard] = [_EMPTY] * size, [0.0] * size, size
            self.rows[shard][row] = PairRow(json.loads(row_id), "", "", json.loads(query_id))
            self.scores[shard][row] = float(score)
            self.missing[shard] -= 1
            if self.missing[shard] == 0:
                del self.missing[shard]
                rows, scores = self.rows.pop(shard), self.scores.pop(shard)
                write_shard(self.job.shard_path(shard), self.job.spec.format, rows, scores, self.job.scan)
        self.progress(len(batch["score"]))

    def close(self) -> None:
        if self.missing:
            raise RuntimeError(f"Ray Data returned incomplete shards: {sorted(self.missing)[:5]}")


_EMPTY = PairRow(None, "", "")


def run_on_ray(
    job: Job,
    *,
    address: str | None = "local",
    actors: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    progress: Progress | None = None,
) -> None:
    """Score ``job``'s pending shards on Ray Data with ``actors`` model actors, then write the output."""
    pending = job.pending()
    if pending:
        ray = connect(address)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # the CLI draws its own
        context.print_on_execution_start = False
        steps = [{"shard": k, "step": j} for k in pending for j in range(-(-job.shard_size(k) // job.step_rows))]
        items = ray.data.from_items(steps, override_num_blocks=len(steps))  # one block (and one batch) per step
        pairs = items.map_batches(StepReader(job), batch_size=1, num_cpus=0, batch_format="numpy")
        scored = pairs.map_batches(
            PairScorer,
            fn_constructor_kwargs={"model": job.spec.model, "load": job.spec.reranker, "threads": int(num_cpus)},
            batch_size=job.step_rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
        collector = ShardCollector(job, progress)
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            collector.add(batch)
        collector.close()
    job.finish()
