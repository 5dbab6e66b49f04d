"""Ranking quality end to end: a first stage, re-rankers on its top-k, metrics per system, A/B comparisons.

Example::

    from rerankd import Reranker
    from rerankd.evaluation import evaluate_rerankers, first_stage_bm25, load_beir

    data = load_beir("scifact", split="test")
    report = evaluate_rerankers(data, first_stage_bm25(data), [Reranker.from_pretrained("all-MiniLM-L6-v2")])
    report.system("all-MiniLM-L6-v2").means["ndcg@10"]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rerankd.errors import InvalidInput
from rerankd.evaluation.datasets import BeirDataset, Run
from rerankd.evaluation.metrics import DEFAULT_MEASURES, evaluate_run, mean_measures, parse_measure
from rerankd.evaluation.progress import StageProgress
from rerankd.evaluation.retrieval import bm25_first_stage, dense_first_stage, rerank_run, run_file_first_stage
from rerankd.evaluation.significance import PairedComparison, compare_paired

if TYPE_CHECKING:
    from rerankd.reranker import Reranker

Role = Literal["first stage", "reranker"]


@dataclass(frozen=True)
class SystemRun:
    """One system's run over a dataset: the first stage or a re-ranker of its candidates."""

    name: str
    role: Role
    run: Run
    seconds: float


@dataclass(frozen=True)
class SystemResult:
    name: str
    role: Role
    seconds: float
    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "seconds": self.seconds, "means": self.means}
        if per_query:
            out["per_query"] = self.per_query
        return out


@dataclass(frozen=True)
class QualityReport:
    """Metrics of every system (first stage first) and a paired comparison of every pair of systems."""

    dataset: str
    split: str
    n_queries: int
    n_documents: int
    top_k: int
    measures: tuple[str, ...]
    ab_measure: str
    systems: tuple[SystemResult, ...]
    comparisons: tuple[PairedComparison, ...]

    def system(self, name: str) -> SystemResult:
        for result in self.systems:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n_queries": self.n_queries,
            "n_documents": self.n_documents,
            "top_k": self.top_k,
            "measures": list(self.measures),
            "ab_measure": self.ab_measure,
            "systems": [result.to_dict(per_query) for result in self.systems],
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
        }


def _timed_first_stage(name: str, retrieve: Any) -> SystemRun:
    started = time.perf_counter()
    run = retrieve()
    return SystemRun(name, "first stage", run, time.perf_counter() - started)


def first_stage_bm25(dataset: BeirDataset, top_k: int = 100, progress: StageProgress | None = None) -> SystemRun:
    return _timed_first_stage("bm25", lambda: bm25_first_stage(dataset, top_k, progress))


def first_stage_run_file(path: str | Path, dataset: BeirDataset, top_k: int = 100) -> SystemRun:
    return _timed_first_stage(f"run:{Path(path).name}", lambda: run_file_first_stage(path, dataset, top_k))


def first_stage_dense(
    encoder: Reranker, dataset: BeirDataset, top_k: int = 100, progress: StageProgress | None = None
) -> SystemRun:
    return _timed_first_stage(
        f"dense:{encoder.info.name}", lambda: dense_first_stage(encoder, dataset, top_k, progress)
    )


def unique_name(name: str, taken: Sequence[str]) -> str:
    """``name``, or ``name#2``, ``name#3``... when a system of that name is already in ``taken``."""
    if name not in taken:
        return name
    number = 2
    while f"{name}#{number}" in taken:
        number += 1
    return f"{name}#{number}"


def rerank_system(
    reranker: Reranker,
    dataset: BeirDataset,
    first_stage: SystemRun,
    top_k: int = 100,
    *,
    name: str | None = None,
    instruction: str | None = None,
    cutoff_layers: Sequence[int] | None = None,
    progress: StageProgress | None = None,
) -> SystemRun:
    """Re-rank the first stage's top-k with one model, timed."""
    label = name or reranker.info.name
    started = time.perf_counter()
    run = rerank_run(
        reranker,
        dataset,
        first_stage.run,
        top_k,
        instruction=instruction,
        cutoff_layers=cutoff_layers,
        progress=progress,
        stage=f"re-rank {label}",
    )
    return SystemRun(label, "reranker", run, time.perf_counter() - started)


def build_quality_report(
    dataset: BeirDataset,
    systems: Sequence[SystemRun],
    *,
    top_k: int = 100,
    measures: Sequence[str] = DEFAULT_MEASURES,
    ab_measure: str = "ndcg@10",
    resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> QualityReport:
    """Metrics for each system's run and a paired comparison of every pair (earlier system = baseline)."""
    if not systems:
        raise InvalidInput("no system to evaluate")
    names = [parse_measure(m).name for m in measures]
    ab_name = parse_measure(ab_measure).name
    if ab_name not in names:
        names.append(ab_name)
    results = []
    for system in systems:
        per_query = evaluate_run(dataset.qrels, system.run, names)
        results.append(
            SystemResult(system.name, system.role, system.seconds, mean_measures(per_query, names), per_query)
        )
    comparisons = tuple(
        compare_paired(
            (a.name, a.per_query), (b.name, b.per_query), ab_name, resamples=resamples, seed=seed, alpha=alpha
        )
        for a, b in combinations(results, 2)
    )
    return QualityReport(
        dataset=dataset.name,
        split=dataset.split,
        n_queries=len(dataset.queries),
        n_documents=len(dataset.corpus),
        top_k=top_k,
        measures=tuple(names),
        ab_measure=ab_name,
        systems=tuple(results),
        comparisons=comparisons,
    )


def evaluate_rerankers(
    dataset: BeirDataset,
    first_stage: SystemRun,
    rerankers: Sequence[Reranker],
    *,
    top_k: int = 100,
    measures: Sequence[str] = DEFAULT_MEASURES,
    ab_measure: str = "ndcg@10",
    instruction: str | None = None,
    cutoff_layers: Sequence[int] | None = None,
    progress: StageProgress | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> QualityReport:
    """Re-rank the first stage's top-k with each model and report every system (first stage included)."""
    systems = [first_stage]
    for reranker in rerankers:
        name = unique_name(reranker.info.name, [s.name for s in systems])
        systems.append(
            rerank_system(
                reranker,
                dataset,
                first_stage,
                top_k,
                name=name,
                instruction=instruction,
                cutoff_layers=cutoff_layers,
                progress=progress,
            )
        )
    return build_quality_report(
        dataset, systems, top_k=top_k, measures=measures, ab_measure=ab_measure, resamples=resamples, seed=seed
    )
