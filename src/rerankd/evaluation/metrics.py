"""Ranking-quality metrics with trec_eval's exact semantics (tests prove equality with pytrec_eval).

Conventions, all as in trec_eval 9:

* a query's documents are ranked by score, best first; ties are broken by document id in *descending*
  string order (trec_eval's ``comp_sim_docno``);
* a document is relevant when its judgement is >= 1; unjudged documents count as non-relevant;
* nDCG uses the judgement itself as the gain (linear, not ``2**rel - 1``) and ``log2(rank + 1)``
  discounts; the ideal ranking is built from *all* judged documents, retrieved or not; negative
  judgements count as gain 0;
* ``recall@k`` and ``map`` divide by the number of relevant judged documents, retrieved or not;
  ``p@k`` always divides by ``k``;
* ``mrr@k`` is the reciprocal rank of the first relevant document within the top ``k`` (0 if none),
  i.e. trec_eval's ``recip_rank`` on the run cut at ``k``.

Unlike ``pytrec_eval`` (which only scores queries present in the run), :func:`evaluate_run` scores every
judged query with a relevant document: a query the run misses scores 0 on every measure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rerankd.errors import InvalidInput

DEFAULT_MEASURES: tuple[str, ...] = (
    "ndcg@1",
    "ndcg@3",
    "ndcg@5",
    "ndcg@10",
    "mrr@10",
    "map",
    "recall@10",
    "recall@100",
)
MEASURE_KINDS = ("ndcg", "mrr", "map", "recall", "p")
TREC_EVAL_NAMES = {"ndcg": "ndcg_cut", "map": "map_cut", "recall": "recall", "p": "P"}


@dataclass(frozen=True)
class Measure:
    """A parsed measure name: ``kind`` in :data:`MEASURE_KINDS`, ``cutoff`` None for the whole ranking."""

    kind: str
    cutoff: int | None

    @property
    def name(self) -> str:
        return self.kind if self.cutoff is None else f"{self.kind}@{self.cutoff}"


def parse_measure(name: str) -> Measure:
    """``"ndcg@10"`` -> ``Measure("ndcg", 10)``; ``"map"`` -> ``Measure("map", None)``."""
    kind, _, cutoff = name.strip().lower().partition("@")
    if kind not in MEASURE_KINDS:
        raise InvalidInput(f"unknown measure {name!r}; use one of {', '.join(MEASURE_KINDS)} with an optional @k")
    if not cutoff:
        if kind in ("recall", "p"):
            raise InvalidInput(f"measure {name!r} needs a cutoff, e.g. {kind}@10")
        return Measure(kind, None)
    if not cutoff.isdigit() or int(cutoff) < 1:
        raise InvalidInput(f"measure {name!r}: the cutoff must be a positive integer")
    return Measure(kind, int(cutoff))


def ranked_documents(scores: Mapping[str, float]) -> list[str]:
    """Document ids best first, ties broken by document id descending (trec_eval's order)."""
    by_id_descending = sorted(scores, reverse=True)
    return sorted(by_id_descending, key=lambda docid: -scores[docid])


def _dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1) if gain > 0)


def ndcg(ranking: Sequence[str], judged: Mapping[str, int], cutoff: int | None) -> float:
    top = ranking if cutoff is None else ranking[:cutoff]
    ideal_gains = sorted((grade for grade in judged.values() if grade > 0), reverse=True)
    ideal = _dcg(ideal_gains if cutoff is None else ideal_gains[:cutoff])
    if ideal == 0:
        return 0.0
    return _dcg(max(judged.get(docid, 0), 0) for docid in top) / ideal


def reciprocal_rank(ranking: Sequence[str], judged: Mapping[str, int], cutoff: int | None) -> float:
    top = ranking if cutoff is None else ranking[:cutoff]
    for rank, docid in enumerate(top, start=1):
        if judged.get(docid, 0) >= 1:
            return 1.0 / rank
    return 0.0


def average_precision(ranking: Sequence[str], judged: Mapping[str, int], cutoff: int | None) -> float:
    n_relevant = sum(1 for grade in judged.values() if grade >= 1)
    if n_relevant == 0:
        return 0.0
    top = ranking if cutoff is None else ranking[:cutoff]
    found, total = 0, 0.0
    for rank, docid in enumerate(top, start=1):
        if judged.get(docid, 0) >= 1:
            found += 1
            total += found / rank
    return total / n_relevant


def recall(ranking: Sequence[str], judged: Mapping[str, int], cutoff: int) -> float:
    n_relevant = sum(1 for grade in judged.values() if grade >= 1)
    if n_relevant == 0:
        return 0.0
    return sum(1 for docid in ranking[:cutoff] if judged.get(docid, 0) >= 1) / n_relevant


def precision(ranking: Sequence[str], judged: Mapping[str, int], cutoff: int) -> float:
    return sum(1 for docid in ranking[:cutoff] if judged.get(docid, 0) >= 1) / cutoff


def measure_value(measure: Measure, ranking: Sequence[str], judged: Mapping[str, int]) -> float:
    if measure.kind == "ndcg":
        return ndcg(ranking, judged, measure.cutoff)
    if measure.kind == "mrr":
        return reciprocal_rank(ranking, judged, measure.cutoff)
    if measure.kind == "map":
        return average_precision(ranking, judged, measure.cutoff)
    assert measure.cutoff is not None
    if measure.kind == "recall":
        return recall(ranking, judged, measure.cutoff)
    return precision(ranking, judged, measure.cutoff)


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> dict[str, dict[str, float]]:
    """Per-query values: query id -> measure name -> value, for every query of ``qrels`` with a relevant
    judgement (queries absent from ``run`` score 0)."""
    parsed = [parse_measure(name) for name in measures]
    results: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        if not any(grade >= 1 for grade in judged.values()):
            continue
        ranking = ranked_documents(run.get(qid, {}))
        results[qid] = {measure.name: measure_value(measure, ranking, judged) for measure in parsed}
    return results


def mean_measures(per_query: Mapping[str, Mapping[str, float]], measures: Sequence[str]) -> dict[str, float]:
    """The mean of each measure over the queries of ``per_query`` (0 when there are none)."""
    names = [parse_measure(name).name for name in measures]
    count = len(per_query)
    return {name: (sum(values[name] for values in per_query.values()) / count if count else 0.0) for name in names}
