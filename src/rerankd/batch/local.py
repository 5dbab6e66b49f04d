"""Run a batch job in this process: shard by shard, step by step, through ``Reranker.score``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rerankd.batch.job import Job, Journal
from rerankd.batch.outputs import write_shard
from rerankd.batch.sources import PairRow

if TYPE_CHECKING:
    from rerankd.reranker import Reranker

logger = logging.getLogger(__name__)

# One step = the pairs that fill this many forward passes of the model's token budget: enough for the planner to
# sort by length and pad little (close to scoring everything at once), few enough that a kill loses little.
STEP_BUDGETS = 32
Progress = Callable[[int], None]


def step_rows(reranker: Reranker, sample: Sequence[PairRow]) -> int:
    """Pairs per scoring step, from the token budget and the mean tokens of the sampled pairs."""
    budget = reranker.budget
    if not sample:
        return STEP_BUDGETS * budget.max_batch_size
    by_query: dict[str, list[str]] = {}
    for row in sample:
        by_query.setdefault(row.query, []).append(row.document)
    tokens = sum(sum(reranker.count_tokens(query, docs)) for query, docs in by_query.items())
    mean = max(1.0, tokens / len(sample))
    return max(1, min(int(STEP_BUDGETS * budget.max_tokens / mean), STEP_BUDGETS * budget.max_batch_size))


def run_local(job: Job, reranker: Reranker, progress: Progress | None = None) -> None:
    """Score every pending shard of ``job`` with ``reranker``, then write the output.

    ``progress`` is called with the number of pairs scored after every step (an earlier run's pairs,
    :meth:`Job.resumed_rows`, are not counted again).
    """
    advance = progress or (lambda n: None)
    for shard in job.pending():
        rows = job.read_shard(shard)
        journal = Journal(job.journal_path(shard))
        steps = journal.load()
        scores = [score for step in steps for score in step]
        for step in range(len(steps), -(-len(rows) // job.step_rows)):
            chunk = rows[step * job.step_rows : (step + 1) * job.step_rows]
            step_scores = [float(s) for s in reranker.score([(row.query, row.document) for row in chunk])]
            journal.append(step, step_scores)
            scores.extend(step_scores)
            advance(len(chunk))
        write_shard(job.shard_path(shard), job.spec.format, rows, scores, job.scan)
        journal.remove()
        logger.debug("shard %d of %d written", shard + 1, job.shards)
    job.finish()
