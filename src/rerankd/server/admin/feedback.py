"""Online quality from user feedback: what was served is remembered by response id, feedback is joined with it, and
each arm of each route accumulates MRR@k, NDCG@k, click-through in the top k and the rank lift over the first stage.

The first-stage order is the order the caller sent the documents in (what it would have shown without reranking),
so "rank lift" is how many places reranking moved the clicked documents up (seed 004's "before and after").
A click counts only when it satisfied the user: one with a reported dwell under ``RERANKD_FEEDBACK_MIN_DWELL_MS``
(30 s by default, the usual "satisfied click" threshold) is a short click and counts as no click.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rerankd.evaluation.metrics import ndcg, reciprocal_rank
from rerankd.evaluation.significance import GroupComparison, compare_groups

MEASURES = ("mrr", "ndcg", "ctr", "rank_lift")


@dataclass(frozen=True)
class Served:
    """A ranking as served: the route the request named, the arm that answered, document indices best first."""

    route: str
    arm: str
    order: tuple[int, ...]
    at: float


@dataclass(frozen=True)
class Outcome:
    mrr: float
    ndcg: float
    ctr: float  # 1.0 when a document in the top k got a satisfied click
    rank_lift: float  # mean (first-stage position - served position) of the documents with a satisfied click

    def value(self, measure: str) -> float:
        return float(getattr(self, measure))


def satisfied_clicks(clicked: Sequence[int], dwell_ms: Mapping[int, float], min_dwell_ms: float) -> list[int]:
    """The clicks that count: a click whose reported dwell is under ``min_dwell_ms`` is a short click (the user
    came straight back: the document did not satisfy them); a click without a reported dwell counts."""
    return [index for index in clicked if dwell_ms.get(index, min_dwell_ms) >= min_dwell_ms]


def outcome(
    served: Served,
    clicked: Sequence[int],
    grades: Mapping[int, int],
    k: int,
    dwell_ms: Mapping[int, float] | None = None,
    min_dwell_ms: float = 0.0,
) -> Outcome:
    """The quality of one served ranking given what the user did: satisfied clicks (see :func:`satisfied_clicks`)
    get grade 1 unless graded; an explicit grade wins, also for a short click."""
    counted = satisfied_clicks(clicked, dwell_ms or {}, min_dwell_ms)
    judged = {str(index): 1 for index in counted} | {str(index): grade for index, grade in grades.items()}
    ranking = [str(index) for index in served.order]
    positions = {index: rank for rank, index in enumerate(served.order)}
    lifts = [index - positions[index] for index in counted if index in positions]
    return Outcome(
        mrr=reciprocal_rank(ranking, judged, k),
        ndcg=ndcg(ranking, judged, k),
        ctr=1.0 if any(positions.get(index, k) < k for index in counted) else 0.0,
        rank_lift=float(np.mean(lifts)) if lifts else 0.0,
    )


@dataclass
class ArmLedger:
    """Outcomes of one (route, arm): the most recent ones, for reports and significance tests."""

    outcomes: deque[Outcome] = field(default_factory=lambda: deque(maxlen=100_000))

    def values(self, measure: str) -> np.ndarray:
        return np.array([o.value(measure) for o in self.outcomes], dtype=np.float64)


@dataclass(frozen=True)
class ArmReport:
    arm: str
    events: int
    means: dict[str, float]


@dataclass(frozen=True)
class RouteReport:
    route: str
    k: int
    arms: list[ArmReport]
    comparisons: list[GroupComparison]


class FeedbackBook:
    """Every arm's outcomes and the report that compares them."""

    def __init__(self) -> None:
        self.ledgers: dict[tuple[str, str], ArmLedger] = {}

    def record(self, served: Served, result: Outcome) -> None:
        self.ledgers.setdefault((served.route, served.arm), ArmLedger()).outcomes.append(result)

    def report(self, route: str, k: int, baseline: str | None = None, measure: str = "mrr") -> RouteReport:
        arms = {arm: ledger for (r, arm), ledger in self.ledgers.items() if r == route}
        reports = [
            ArmReport(arm, len(ledger.outcomes), {m: float(ledger.values(m).mean()) for m in MEASURES})
            for arm, ledger in arms.items()
        ]
        names = list(arms)
        base = baseline if baseline in arms else (names[0] if names else None)
        comparisons = [
            compare_groups((base, arms[base].values(measure)), (name, arms[name].values(measure)), measure)
            for name in names
            if base is not None and name != base
        ]
        return RouteReport(route, k, reports, comparisons)
