"""bge-reranker-v2-gemma vs FlagEmbedding's FlagLLMReranker on a tiny random GemmaForCausalLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.families.base import CallOptions
from rerankd.families.yes_no import BGE_PROMPT
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
OTHER_QUERY = "where is the capital city of france"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 12)
PROMPT = "Predict whether passage B contains an answer to query A."


def _docs() -> list[str]:
    return corpus(seed=3, n=10, min_words=3, max_words=40) + corpus(seed=4, n=3, min_words=90, max_words=160)


def _pairs() -> list[tuple[str, str]]:
    docs = _docs()
    return [(QUERY, d) for d in docs] + [(OTHER_QUERY, d) for d in docs[:5]] + [(LONG_QUERY, d) for d in docs[:4]]


def flag_llm_reranker(
    path: Path, pairs: list[tuple[str, str]], max_length: int, prompt: str | None = None
) -> np.ndarray:
    from FlagEmbedding import FlagLLMReranker

    reference = FlagLLMReranker(str(path), use_fp16=False, devices=["cpu"], max_length=max_length, batch_size=6)
    return np.array(reference.compute_score(pairs, normalize=False, prompt=prompt))


@pytest.mark.oracle
@pytest.mark.parametrize("max_length", [512, 64])
def test_matches_flag_llm_reranker(gemma_path: Path, max_length: int) -> None:
    pairs = _pairs()
    ours = Reranker.from_pretrained(
        str(gemma_path), device="cpu", dtype="float32", max_length=max_length, normalize=False
    )
    got = np.array(ours.score(pairs))
    want = flag_llm_reranker(gemma_path, pairs, max_length)
    assert np.abs(got - want).max() <= 1e-4
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()
    assert got.std() > 0.2


def test_truncation_budget(gemma_path: Path) -> None:
    """Query capped at max_length*3//4, passage cut only_second-style, then "\\n" + prompt; BOS first."""
    reranker = Reranker.from_pretrained(str(gemma_path), device="cpu", dtype="float32", max_length=64)
    family = reranker.family
    short = family.encode_pairs(QUERY, _docs(), CallOptions())
    long_query = family.encode_pairs(LONG_QUERY, _docs()[-2:], CallOptions())
    prompt_len = len(family._prompt_ids(BGE_PROMPT))
    sep_len = len(family.sep_ids)
    assert all(item.input_ids[0] == 2 for item in short + long_query)  # <bos>
    # short query: the passage alone is capped at max_length tokens
    cut = [item for item in short if item.truncated]
    assert len(cut) >= 3 and len(cut) < len(short)
    assert all(len(item) == item.prefix_length + 64 + sep_len + prompt_len for item in cut)
    # long query: capped at 48 tokens (+ BOS); the passage gets what is left of max_length + sep + prompt
    assert all(item.truncated for item in long_query)
    assert all(item.prefix_length == 1 + 64 * 3 // 4 + sep_len for item in long_query)
    assert all(len(item) == 64 + 2 * (sep_len + prompt_len) for item in long_query)


@pytest.mark.oracle
def test_prompt_override_per_call(gemma_path: Path) -> None:
    pairs = _pairs()[:8]
    reranker = Reranker.from_pretrained(str(gemma_path), device="cpu", dtype="float32", normalize=False)
    default = np.array(reranker.score(pairs))
    custom = np.array(reranker.score(pairs, instruction=PROMPT))
    want = flag_llm_reranker(gemma_path, pairs, 512, prompt=PROMPT)
    assert np.abs(custom - want).max() <= 1e-4
    assert np.abs(custom - default).max() > 1e-3
    assert np.allclose(reranker.score(pairs), default, atol=1e-6)


def test_normalized_scores_are_sigmoid_of_the_yes_logit(gemma_path: Path) -> None:
    pairs = _pairs()[:6]
    raw = np.array(Reranker.from_pretrained(str(gemma_path), device="cpu", normalize=False).score(pairs))
    norm = np.array(Reranker.from_pretrained(str(gemma_path), device="cpu").score(pairs))
    assert np.allclose(norm, 1 / (1 + np.exp(-raw)), atol=1e-7)


def test_default_limits(gemma_path: Path) -> None:
    reranker = Reranker.from_pretrained(str(gemma_path), device="cpu", dtype="float32")
    assert reranker.family.limits.max_length == 512  # FlagLLMReranker's default
    assert reranker.family.limits.pad_to_multiple_of == 8


# Computed once from the seeded fixture (seed 0); a change here means the recipe or the model math moved.
GOLDEN_RAW = {0: 0.180887, 11: -0.690343, 14: 0.049236, 19: -0.678521}


def test_golden_scores(gemma_path: Path) -> None:
    reranker = Reranker.from_pretrained(str(gemma_path), device="cpu", dtype="float32", normalize=False)
    pairs = _pairs()
    got = reranker.score([pairs[i] for i in GOLDEN_RAW])
    assert np.allclose(got, list(GOLDEN_RAW.values()), atol=1e-4), got
