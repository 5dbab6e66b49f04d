"""Qwen3-Reranker vs the official transformers recipe (Qwen3-Embedding repo / model card) on tiny random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.families.base import CallOptions
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
OTHER_QUERY = "where is the capital city of france"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 12)

# The oracle's template, written from the model card (independent of rerankd's constants).
ORACLE_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
ORACLE_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
ORACLE_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _docs() -> list[str]:
    return corpus(seed=3, n=10, min_words=3, max_words=40) + corpus(seed=4, n=3, min_words=90, max_words=160)


def _pairs() -> list[tuple[str, str]]:
    docs = _docs()
    return [(QUERY, d) for d in docs] + [(OTHER_QUERY, d) for d in docs[:5]] + [(LONG_QUERY, d) for d in docs[:3]]


def official_recipe(
    path: Path, pairs: list[tuple[str, str]], max_length: int = 8192, instruction: str | None = None, batch: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(probability of "yes", l_yes - l_no) the way the model card computes them: left padding, full causal LM,
    ``logits[:, -1]``, log_softmax over [no, yes]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(ORACLE_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(ORACLE_SUFFIX, add_special_tokens=False)
    task = instruction or ORACLE_INSTRUCTION
    texts = [f"<Instruct>: {task}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    probs, diffs = [], []
    for start in range(0, len(texts), batch):
        enc = tokenizer(
            texts[start : start + batch],
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix) - len(suffix),
        )
        ids = {"input_ids": [prefix + row + suffix for row in enc["input_ids"]]}
        inputs = tokenizer.pad(ids, padding=True, return_tensors="pt")
        with torch.no_grad():
            last = model(**inputs).logits[:, -1, :]
        pair = torch.stack([last[:, no], last[:, yes]], dim=1)
        probs.append(torch.log_softmax(pair, dim=1)[:, 1].exp())
        diffs.append(last[:, yes] - last[:, no])
    return torch.cat(probs).numpy(), torch.cat(diffs).numpy()


@pytest.mark.parametrize("max_length", [None, 200])
def test_matches_official_recipe(qwen_path: Path, max_length: int | None) -> None:
    pairs = _pairs()
    ours = Reranker.from_pretrained(str(qwen_path), device="cpu", dtype="float32", max_length=max_length)
    raw = Reranker.from_pretrained(
        str(qwen_path), device="cpu", dtype="float32", max_length=max_length, normalize=False
    )
    want_prob, want_diff = official_recipe(qwen_path, pairs, max_length or 8192)
    got_prob, got_diff = np.array(ours.score(pairs)), np.array(raw.score(pairs))
    assert np.abs(got_prob - want_prob).max() <= 1e-4
    assert np.abs(got_diff - want_diff).max() <= 1e-4
    assert np.argsort(-got_diff).tolist() == np.argsort(-want_diff).tolist()
    assert got_diff.std() > 0.3  # random weights still give well-spread scores: a constant would not pass


def test_truncation_cuts_the_body_and_keeps_the_suffix(qwen_path: Path) -> None:
    reranker = Reranker.from_pretrained(str(qwen_path), device="cpu", dtype="float32", max_length=200)
    family = reranker.family
    encoded = family.encode_pairs(QUERY, _docs(), CallOptions())
    long_ones = [item for item in encoded if item.truncated]
    assert len(long_ones) >= 3 and len(long_ones) < len(encoded)
    for item in long_ones:
        assert len(item) == 200
        assert item.input_ids[-len(family.suffix_ids) :] == family.suffix_ids
    assert all(len(item) == item.full_length for item in encoded if not item.truncated)


def test_untied_head_matches_official_recipe(qwen_untied_path: Path) -> None:
    pairs = _pairs()[:8]
    ours = Reranker.from_pretrained(str(qwen_untied_path), device="cpu", dtype="float32", normalize=False)
    _, want = official_recipe(qwen_untied_path, pairs)
    assert np.abs(np.array(ours.score(pairs)) - want).max() <= 1e-4


def test_instruction_per_call(qwen_path: Path) -> None:
    pairs = _pairs()[:8]
    instruction = "Given a question about animals, find passages about that animal"
    reranker = Reranker.from_pretrained(str(qwen_path), device="cpu", dtype="float32")
    default = np.array(reranker.score(pairs))
    custom = np.array(reranker.score(pairs, instruction=instruction))
    want, _ = official_recipe(qwen_path, pairs, instruction=instruction)
    assert np.abs(custom - want).max() <= 1e-4
    assert np.abs(custom - default).max() > 1e-3
    assert np.allclose(reranker.score(pairs), default, atol=1e-6)  # the call's instruction did not stick


def test_rank_orders_by_score(qwen_path: Path) -> None:
    reranker = Reranker.from_pretrained(str(qwen_path), device="cpu", dtype="float32")
    docs = _docs()
    ranked = reranker.rank(QUERY, docs, top_n=4)
    scores = reranker.score([(QUERY, d) for d in docs])
    assert [r.index for r in ranked] == np.argsort(-np.array(scores), kind="stable")[:4].tolist()
    assert all(0.0 < r.score < 1.0 for r in ranked)


# Computed once from the seeded fixture (seed 0, tied); a change here means the recipe or the model math moved.
GOLDEN_RAW = {0: -2.921885, 11: -3.354097, 14: -3.479824, 19: -4.679664}


def test_golden_scores(qwen_path: Path) -> None:
    reranker = Reranker.from_pretrained(str(qwen_path), device="cpu", dtype="float32", normalize=False)
    pairs = _pairs()
    got = reranker.score([pairs[i] for i in GOLDEN_RAW])
    assert np.allclose(got, list(GOLDEN_RAW.values()), atol=1e-4), got
