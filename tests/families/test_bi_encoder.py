"""Bi-encoders vs sentence-transformers on the real all-MiniLM-L6-v2 weights and on tiny random encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import InvalidInput, Reranker
from rerankd.families.first_token import FirstTokenLayer
from tests.tiny_models import corpus

TEXTS = [
    "what is panda?",
    "The giant panda is a bear species endemic to China.",
    "hi",
    "Paris is the capital and largest city of France.",
    "Machine learning studies algorithms that improve through experience and data.",
    " ".join(["A very long passage about rivers, forests and mountains."] * 60),
]


@pytest.fixture(scope="module")
def minilm() -> Reranker:
    return Reranker.from_pretrained("all-MiniLM-L6-v2", device="cpu", dtype="float32")


@pytest.mark.oracle
def test_embeddings_match_sentence_transformers(minilm: Reranker, minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(minilm_path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = minilm.embed(TEXTS)
    assert ours.shape == ref.shape == (len(TEXTS), 384)
    cosines = (ours * ref).sum(axis=1)
    assert cosines.min() >= 0.9999
    assert np.abs(ours - ref).max() < 1e-5


def test_scores_are_cosines_and_rank_the_panda_passage_first(minilm: Reranker) -> None:
    ranked = minilm.rank("what is panda?", TEXTS[1:])
    assert ranked[0].index == 0 and ranked[0].document == TEXTS[1]
    hi = next(r for r in ranked if r.document == "hi")
    assert ranked[0].score - hi.score > 0.4
    vectors = minilm.embed(TEXTS[:2])
    assert ranked[0].score == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-6)


def test_golden_scores(minilm: Reranker) -> None:
    """Pinned cosines of the real model: a silent change in tokenisation or pooling shows up here."""
    scores = minilm.score([("what is panda?", TEXTS[1]), ("what is panda?", "hi"), (TEXTS[3], TEXTS[4])])
    assert scores == pytest.approx([0.7633221, 0.1101959, -0.0432583], abs=1e-5)


def test_query_instruction_changes_query_vectors_only(minilm_path: Path) -> None:
    plain = Reranker.from_pretrained(str(minilm_path), device="cpu")
    prompted = Reranker.from_pretrained(str(minilm_path), device="cpu", query_instruction="query: ")
    assert np.allclose(plain.embed(["hi"]), prompted.embed(["hi"]))
    assert not np.allclose(plain.embed(["hi"], role="query"), prompted.embed(["hi"], role="query"))
    assert np.allclose(prompted.embed(["hi"], role="query"), plain.embed(["query: hi"]), atol=1e-6)


@pytest.mark.oracle
@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_pooling_modes_match_sentence_transformers(pooling: str, bert_ce: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    encoder = Transformer(str(bert_ce), max_seq_length=64)
    st = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), pooling)], device="cpu")
    folder = tmp_path / f"st-{pooling}"
    st.save(str(folder))
    texts = corpus(seed=5, n=7, min_words=2, max_words=80)
    ref = st.encode(texts, normalize_embeddings=True)
    model = Reranker.from_pretrained(str(folder), device="cpu")
    ours = model.embed(texts)
    assert np.abs(ours - ref).max() < 1e-5
    last = model.family.model.encoder.layer[-1]  # type: ignore[union-attr]
    assert isinstance(last, FirstTokenLayer) == (pooling == "cls")  # CLS pooling reads position 0 only


def test_embed_needs_a_bi_encoder(bert_ce: Path) -> None:
    with pytest.raises(InvalidInput, match="embeddings need a bi-encoder"):
        Reranker.from_pretrained(str(bert_ce), device="cpu").embed(["x"])
