"""``rerankd batch``: offline scoring of any number of pairs, streaming, resumable, in deterministic order.

Inputs (:mod:`rerankd.batch.sources`, :mod:`rerankd.batch.beir`): JSONL or Parquet files of pairs or of
query x candidates groups, or a BEIR folder plus a TREC run file (the top ``k`` of each query). Outputs
(:mod:`rerankd.batch.outputs`): JSONL, Parquet or a TREC run file. :mod:`rerankd.batch.job` holds the on-disk
state that makes a killed job resumable; :mod:`rerankd.batch.local` runs a job in this process and
:mod:`rerankd.distributed.batch` on a Ray cluster.
"""

from __future__ import annotations

from rerankd.batch.job import Job, JobSpec, open_job
from rerankd.batch.local import run_local, step_rows
from rerankd.batch.outputs import format_of
from rerankd.batch.sources import PairRow

__all__ = ["Job", "JobSpec", "PairRow", "format_of", "open_job", "run_local", "step_rows"]
