"""``rerankd smoke``: does a model put each relevant passage above its irrelevant one, and how fast is it?

The report mirrors the sanity table deployment guides print after loading a reranker: per query the
relevant and irrelevant scores and PASS/FAIL, then load time, mean single-pair latency and throughput.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rerankd.errors import InvalidInput
from rerankd.evaluation.builtin_inputs import SMOKE_CASES, SmokeCase
from rerankd.evaluation.progress import StageProgress, stage_counter

if TYPE_CHECKING:
    from rerankd.reranker import Reranker


@dataclass(frozen=True)
class SmokeResult:
    query: str
    relevant_score: float
    irrelevant_score: float

    @property
    def passed(self) -> bool:
        return self.relevant_score > self.irrelevant_score


@dataclass(frozen=True)
class SmokeReport:
    """Scores of every case plus timings.

    ``mean_latency_s`` is the mean wall time of scoring one pair alone (after a warm-up call) over
    ``repeats`` runs; ``throughput_per_s`` is its inverse (pairs per second, one at a time);
    ``batch_throughput_per_s`` is pairs per second when all the cases' pairs are scored in one call.
    """

    model: str
    family: str
    device: str
    dtype: str
    results: tuple[SmokeResult, ...]
    load_seconds: float
    mean_latency_s: float
    throughput_per_s: float
    batch_throughput_per_s: float
    repeats: int

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = [{**asdict(r), "passed": r.passed} for r in self.results]
        out["passed"] = self.passed
        return out


def _score(reranker: Reranker, pairs: list[tuple[str, str]], call: dict[str, Any]) -> list[float]:
    return reranker.score(pairs, **call)


def _mean_seconds(reranker: Reranker, pairs: list[tuple[str, str]], call: dict[str, Any], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        _score(reranker, pairs, call)
        timings.append(time.perf_counter() - started)
    return statistics.fmean(timings)


def run_smoke(
    reranker: Reranker,
    cases: Sequence[SmokeCase] = SMOKE_CASES,
    *,
    repeats: int = 5,
    instruction: str | None = None,
    cutoff_layers: Sequence[int] | None = None,
    progress: StageProgress | None = None,
) -> SmokeReport:
    """Score every case's relevant and irrelevant passage, then time single-pair and batched scoring."""
    if not cases or repeats < 1:
        raise InvalidInput("smoke needs at least one case and one repeat")
    call: dict[str, Any] = {"instruction": instruction, "cutoff_layers": cutoff_layers}
    pairs = [(case.query, text) for case in cases for text in (case.relevant, case.irrelevant)]
    advance = stage_counter(progress, "smoke", 2 + 2 * repeats)
    scores = _score(reranker, pairs, call)  # also the warm-up
    if advance:
        advance(2)
    results = tuple(SmokeResult(case.query, scores[2 * i], scores[2 * i + 1]) for i, case in enumerate(cases))
    single = _mean_seconds(reranker, pairs[:1], call, repeats)
    if advance:
        advance(repeats)
    batched = _mean_seconds(reranker, pairs, call, repeats)
    if advance:
        advance(repeats)
    info = reranker.info
    return SmokeReport(
        model=info.name,
        family=info.family,
        device=info.device,
        dtype=info.dtype,
        results=results,
        load_seconds=info.load_seconds,
        mean_latency_s=single,
        throughput_per_s=1.0 / single if single > 0 else float("inf"),
        batch_throughput_per_s=len(pairs) / batched if batched > 0 else float("inf"),
        repeats=repeats,
    )
