"""A batch job on disk: its arguments, its shards, and the state folder that makes it resumable.

The pairs of the input, in input order, are cut into *shards* of ``shard_rows`` pairs and each shard into
*steps* of ``step_rows`` pairs; both sizes are fixed when the job is created and stored in ``job.json``, so
the cut never depends on timing or on where a run was interrupted. A step is one ``Reranker.score`` call; the
scores of the finished steps of the shard in progress are appended to a journal (flushed to disk per step),
and a finished shard is written under a temporary name and renamed. A restarted job therefore reads the
shards that exist, replays the journal, and scores each remaining step exactly as the uninterrupted run would
have: the output is byte for byte the same, no pair is lost and none is scored into the output twice.

State folder: ``<output>.rerankd-job/`` next to the output (``job.json``, ``part-NNNNN.{jsonl,parquet}``,
``part-NNNNN.journal``, and for BEIR inputs the staged SQLite file). It is removed once the output is whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.batch.beir import STAGED, BeirRunSource
from rerankd.batch.outputs import Format, atomic_file, merge_shards, shard_suffix
from rerankd.batch.sources import Layout, PairRow, RecordSource, Scan, open_source
from rerankd.errors import InvalidInput

VERSION = 1
SAMPLE_ROWS = 256
Source = RecordSource | BeirRunSource
StepSizer = Callable[[Sequence[PairRow]], int]


@dataclass(frozen=True)
class JobSpec:
    """What a user asked for; a restarted job must be given the same (see :meth:`arguments`)."""

    input: Path
    output: Path
    model: str
    reranker: dict[str, Any] = field(default_factory=dict)  # Reranker.from_pretrained keyword arguments
    format: Format = "jsonl"
    run: Path | None = None  # with a BEIR folder as input: the run file whose top_k per query are re-ranked
    top_k: int = 100
    layout: Layout | None = None  # pairs or groups; None: detected from the first record
    tag: str = "rerankd"
    shard_rows: int | None = None  # None: a few steps

    def state_folder(self) -> Path:
        return self.output.with_name(self.output.name + ".rerankd-job")

    def open_source(self, folder: Path) -> Source:
        if self.input.is_dir():
            if self.run is None:
                raise InvalidInput(f"{self.input} is a folder: re-ranking a BEIR folder needs --run RUN_FILE")
            return BeirRunSource(self.input, self.run, self.top_k, folder / STAGED)
        if self.run is not None:
            raise InvalidInput("--run applies to a BEIR folder input, not to a file of pairs")
        return open_source(self.input, self.layout)

    def arguments(self, source: Source) -> dict[str, Any]:
        """What a restart must repeat: the input files as they were, the model and every scoring setting."""
        settings = {key: value for key, value in self.reranker.items() if key != "device"}
        return {
            "input": source.identity(),
            "model": self.model,
            "reranker": json.loads(json.dumps(settings, default=str)),
            "format": self.format,
            "tag": self.tag,
            "shard_rows": self.shard_rows,
        }


@dataclass
class Job:
    spec: JobSpec
    folder: Path
    source: Source
    scan: Scan
    step_rows: int
    shard_rows: int

    @property
    def shards(self) -> int:
        return len(self.scan.cursors)

    def shard_size(self, shard: int) -> int:
        return min(self.shard_rows, self.scan.total - shard * self.shard_rows)

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"part-{shard:05d}{shard_suffix(self.spec.format)}"

    def journal_path(self, shard: int) -> Path:
        return self.folder / f"part-{shard:05d}.journal"

    def pending(self) -> list[int]:
        return [k for k in range(self.shards) if not self.shard_path(k).exists()]

    def done_rows(self) -> int:
        return sum(self.shard_size(k) for k in range(self.shards) if self.shard_path(k).exists())

    def resumed_rows(self) -> int:
        """Pairs an earlier run already scored: whole shards plus the journaled steps of unfinished ones."""
        journaled = sum(len(s) for k in self.pending() for s in Journal(self.journal_path(k)).load())
        return self.done_rows() + journaled

    def read_shard(self, shard: int) -> list[PairRow]:
        return list(self.source.read(self.scan.cursors[shard], self.shard_size(shard)))

    def finish(self) -> None:
        """Merge the shards into the output (atomically) and remove the state folder."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"shards {missing[:5]} are not scored yet")
        shards = [self.shard_path(k) for k in range(self.shards)]
        merge_shards(shards, self.spec.output, self.spec.format, self.spec.tag)
        shutil.rmtree(self.folder)


def open_job(spec: JobSpec, step_sizer: StepSizer, *, restart: bool = False) -> Job:
    """Resume the job of ``spec`` from its state folder, or create it (checking the input once, in full).

    ``step_sizer`` turns a sample of the first pairs into the pairs per scoring step (from the model's token
    budget); it is only called when the job is created.
    """
    folder = spec.state_folder()
    if restart:
        shutil.rmtree(folder, ignore_errors=True)
        spec.output.unlink(missing_ok=True)
    manifest = folder / "job.json"
    if manifest.exists():
        return _resume(spec, folder, json.loads(manifest.read_text()))
    if spec.output.exists():
        raise InvalidInput(f"{spec.output} already exists (a finished job?): remove it, or pass --restart")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = spec.open_source(folder)
    step_rows = max(1, step_sizer(list(source.read(source.start(), SAMPLE_ROWS))))
    shard_rows = -(-(spec.shard_rows or 4 * step_rows) // step_rows) * step_rows
    scan = source.scan(shard_rows)
    if spec.format == "trec" and scan.query_id_kind == "none":
        raise InvalidInput("a TREC run needs query ids: use a BEIR folder + run, groups, or pairs with 'query_id'")
    state = {
        "version": VERSION,
        "arguments": spec.arguments(source),
        "step_rows": step_rows,
        "shard_rows": shard_rows,
        "scan": scan.to_json(),
    }
    with atomic_file(manifest) as handle:
        handle.write(json.dumps(state, indent=1).encode())
    return Job(spec, folder, source, scan, step_rows, shard_rows)


def _resume(spec: JobSpec, folder: Path, state: dict[str, Any]) -> Job:
    source = spec.open_source(folder)
    arguments = spec.arguments(source)
    if state.get("version") != VERSION or state["arguments"] != arguments:
        changed = sorted(key for key in arguments if state.get("arguments", {}).get(key) != arguments[key])
        raise InvalidInput(
            f"{folder} holds an unfinished job with other arguments or inputs (differs in: {', '.join(changed)}): "
            "repeat its arguments to resume it, or pass --restart to discard it"
        )
    scan = Scan.from_json(state["scan"])
    return Job(spec, folder, source, scan, int(state["step_rows"]), int(state["shard_rows"]))


class Journal:
    """The scores of a shard's finished steps, one JSON line per step, each flushed to disk when written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[list[float]]:
        """Scores of the steps recorded so far; a torn last line (a kill mid-write) is cut off the file."""
        if not self.path.exists():
            return []
        steps: list[list[float]] = []
        valid = 0
        with self.path.open("rb") as handle:
            for line in handle:
                try:
                    entry = json.loads(line) if line.endswith(b"\n") else None
                except json.JSONDecodeError:
                    entry = None
                if not isinstance(entry, dict) or entry.get("step") != len(steps):
                    break
                steps.append([float(score) for score in entry["scores"]])
                valid += len(line)
        if valid != self.path.stat().st_size:
            with self.path.open("r+b") as handle:
                handle.truncate(valid)
        return steps

    def append(self, step: int, scores: Sequence[float]) -> None:
        with self.path.open("ab") as handle:
            handle.write(json.dumps({"step": step, "scores": list(scores)}).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
