"""Ranking metrics: hand-computed values (graded relevance, ties, missing judgements) and equality with
pytrec_eval (trec_eval) on random runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankd.errors import InvalidInput
from rerankd.evaluation.metrics import (
    Measure,
    evaluate_run,
    mean_measures,
    ndcg,
    parse_measure,
    ranked_documents,
)

QRELS = {"q1": {"a": 2, "b": 0, "c": 1, "z": 3}}
RUN = {"q1": {"a": 1.0, "b": 1.0, "c": 0.5, "x": 2.0}}  # x unjudged; a and b tie; z relevant, not retrieved


def test_ties_break_by_document_id_descending_like_trec_eval() -> None:
    assert ranked_documents({"a": 1.0, "b": 1.0, "c": 0.5, "x": 2.0}) == ["x", "b", "a", "c"]
    assert ranked_documents({"d10": 0.0, "d9": 0.0, "d2": 0.0}) == ["d9", "d2", "d10"]  # string order, not numeric


def test_hand_computed_graded_relevance_ties_and_missing_judgements() -> None:
    # Ranking x(unjudged) b(0) a(2) c(1); relevant judged: a, c, z -> 3.
    values = evaluate_run(QRELS, RUN, ["ndcg@1", "ndcg@3", "ndcg@5", "mrr@10", "mrr@2", "map", "recall@10", "p@4"])[
        "q1"
    ]
    ideal_3 = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    ideal_4 = ideal_3 + 0  # only three documents have gain > 0
    assert values["ndcg@1"] == 0.0
    assert values["ndcg@3"] == pytest.approx((2 / math.log2(4)) / ideal_3, abs=1e-12)
    assert values["ndcg@5"] == pytest.approx((2 / math.log2(4) + 1 / math.log2(5)) / ideal_4, abs=1e-12)
    assert values["mrr@10"] == pytest.approx(1 / 3)
    assert values["mrr@2"] == 0.0  # first relevant document is at rank 3
    assert values["map"] == pytest.approx((1 / 3 + 2 / 4) / 3)
    assert values["recall@10"] == pytest.approx(2 / 3)
    assert values["p@4"] == pytest.approx(2 / 4)


def test_gain_is_linear_and_negative_judgements_count_as_zero() -> None:
    judged = {"a": 3, "b": 1, "n": -2}
    # linear gains: DCG = 1/1 + 3/log2(3); ideal = 3/1 + 1/log2(3)
    assert ndcg(["b", "a", "n"], judged, None) == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert ndcg(["n", "a", "b"], judged, 3) == ndcg(["x", "a", "b"], judged, 3)


def test_queries_missing_from_the_run_score_zero_and_unjudgeable_queries_are_skipped() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    per_query = evaluate_run(qrels, {"q1": {"a": 0.3}}, ["ndcg@10", "map"])
    assert set(per_query) == {"q1", "q2"}  # q3 has no relevant document
    assert per_query["q1"] == {"ndcg@10": 1.0, "map": 1.0}
    assert per_query["q2"] == {"ndcg@10": 0.0, "map": 0.0}
    assert mean_measures(per_query, ["ndcg@10", "map"]) == {"ndcg@10": 0.5, "map": 0.5}


def test_parse_measure() -> None:
    assert parse_measure("NDCG@10") == Measure("ndcg", 10)
    assert parse_measure("map") == Measure("map", None)
    assert parse_measure("mrr@10").name == "mrr@10"
    for bad in ("bleu@4", "recall", "ndcg@0", "ndcg@x"):
        with pytest.raises(InvalidInput):
            parse_measure(bad)


# ---------------------------------------------------------------- equality with pytrec_eval
OURS_TO_TREC = {
    "ndcg@1": "ndcg_cut_1",
    "ndcg@3": "ndcg_cut_3",
    "ndcg@5": "ndcg_cut_5",
    "ndcg@10": "ndcg_cut_10",
    "ndcg": "ndcg",
    "map": "map",
    "map@5": "map_cut_5",
    "recall@10": "recall_10",
    "recall@100": "recall_100",
    "p@5": "P_5",
    "mrr": "recip_rank",
}
TREC_MEASURES = {"ndcg_cut.1,3,5,10", "ndcg", "map", "map_cut.5", "recall.10,100", "P.5", "recip_rank"}


@st.composite
def qrels_and_run(draw: st.DrawFn) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(draw(st.integers(1, 3))):
        docs = [f"d{i}" for i in range(draw(st.integers(1, 25)))]
        judged_docs = draw(st.lists(st.sampled_from(docs), min_size=1, unique=True))
        judged = {d: draw(st.sampled_from([-1, 0, 0, 1, 2, 3])) for d in judged_docs}
        judged[judged_docs[0]] = draw(st.integers(1, 3))  # at least one relevant document
        retrieved = draw(st.lists(st.sampled_from(docs), min_size=1, unique=True))
        # few distinct scores, so ties are frequent
        run[f"q{q}"] = {d: float(draw(st.integers(0, 4))) / 2 for d in retrieved}
        qrels[f"q{q}"] = judged
    return qrels, run


@pytest.mark.oracle
@settings(max_examples=150, deadline=None)
@given(qrels_and_run())
def test_metrics_equal_pytrec_eval(data: tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = data
    reference = pytrec_eval.RelevanceEvaluator(qrels, TREC_MEASURES).evaluate(run)
    cut_at_10 = {q: {d: scores[d] for d in ranked_documents(scores)[:10]} for q, scores in run.items()}
    reference_mrr10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut_at_10)
    ours = evaluate_run(qrels, run, [*OURS_TO_TREC, "mrr@10"])
    for qid, values in reference.items():
        for name, trec_name in OURS_TO_TREC.items():
            assert ours[qid][name] == pytest.approx(values[trec_name], abs=1e-12), (qid, name)
        assert ours[qid]["mrr@10"] == pytest.approx(reference_mrr10[qid]["recip_rank"], abs=1e-12)
