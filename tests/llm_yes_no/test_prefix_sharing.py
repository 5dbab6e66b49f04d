"""Query-prefix sharing equals the unshared computation; batch invariance; heads never project the vocabulary."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.families.base import CallOptions, Encoded
from rerankd.families.prefix_sharing import prefix_cache_for_rows, shared_layout
from tests.llm_yes_no.tiny_llms import load_reranker
from tests.tiny_models import corpus

FAMILIES = ["qwen_path", "gemma_path"]
QUERIES = ["What is the giant panda bear of china?", "where is the capital city of france", "how fast is a river"]


def _mixed_pairs(seed: int = 0) -> list[tuple[str, str]]:
    docs = corpus(seed=5, n=9, min_words=3, max_words=40) + corpus(seed=6, n=2, min_words=120, max_words=160)
    pairs = [(q, d) for q in QUERIES for d in docs]
    random.Random(seed).shuffle(pairs)
    return pairs


def _path(request: pytest.FixtureRequest, fixture: str) -> Path:
    path: Path = request.getfixturevalue(fixture)
    return path


@pytest.mark.parametrize("fixture", FAMILIES)
@pytest.mark.parametrize("max_length", [None, 160])
def test_sharing_on_equals_off(request: pytest.FixtureRequest, fixture: str, max_length: int | None) -> None:
    path, pairs = _path(request, fixture), _mixed_pairs()
    shared = np.array(load_reranker(path, max_length=max_length).score(pairs))
    whole = np.array(load_reranker(path, max_length=max_length, prefix_sharing=False).score(pairs))
    assert np.abs(shared - whole).max() <= 1e-4
    assert np.argsort(-shared).tolist() == np.argsort(-whole).tolist()


def _embedded_tokens(reranker: Reranker, query: str, docs: list[str]) -> int:
    seen: list[int] = []
    embed = reranker.family.decoder.model.get_input_embeddings()
    handle = embed.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].numel())))
    reranker.rank(query, docs)
    handle.remove()
    return sum(seen)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_sharing_runs_the_prefix_once(request: pytest.FixtureRequest, fixture: str) -> None:
    """Count the tokens entering the model: with sharing, the query prefix is embedded once per batch."""
    path = _path(request, fixture)
    docs = corpus(seed=5, n=8, min_words=3, max_words=10)
    counts: dict[bool, int] = {}
    for sharing in (True, False):
        reranker = load_reranker(path, prefix_sharing=sharing)
        counts[sharing] = _embedded_tokens(reranker, QUERIES[0], docs)
    encoded = reranker.family.encode_pairs(QUERIES[0], docs, CallOptions())
    prefix = encoded[0].prefix_length
    assert prefix > 10
    assert counts[False] - counts[True] >= (len(docs) - 1) * prefix


@pytest.mark.parametrize("fixture", FAMILIES)
def test_batch_invariance(request: pytest.FixtureRequest, fixture: str) -> None:
    """A pair scores the same alone, in a mixed batch of several queries, and under other batch cuts."""
    path, pairs = _path(request, fixture), _mixed_pairs(seed=1)
    together = np.array(Reranker.from_pretrained(str(path), device="cpu", dtype="float32").score(pairs))
    small = Reranker.from_pretrained(str(path), device="cpu", dtype="float32", batch_tokens=600)
    cut = np.array(small.score(pairs))
    alone = np.array([small.score([pair])[0] for pair in pairs[:6]])
    assert np.abs(together - cut).max() <= 1e-4
    assert np.abs(together[:6] - alone).max() <= 1e-4


def test_shared_layout_groups_rows_by_prefix() -> None:
    a = Encoded(input_ids=(1, 2, 3, 7, 8), prefix_length=3)
    b = Encoded(input_ids=(1, 2, 3, 9), prefix_length=3)
    c = Encoded(input_ids=(1, 5, 6, 9), prefix_length=3)
    layout = shared_layout([a, c, b], pad_id=0)
    assert layout is not None
    assert layout.row_group.tolist() == [0, 1, 0]
    assert layout.prefix_ids.tolist() == [[1, 2, 3], [1, 5, 6]]
    assert layout.tail_ids.tolist() == [[7, 8], [9, 0], [9, 0]]
    assert layout.tail_mask.tolist() == [[1, 1], [1, 0], [1, 0]]
    assert shared_layout([a, c], pad_id=0) is None  # nothing shared: one plain forward is cheaper
    assert shared_layout([a, Encoded(input_ids=(1, 2, 3))], pad_id=0) is None  # no prefix declared


@pytest.mark.parametrize("fixture", FAMILIES)
def test_head_never_computes_vocabulary_logits(request: pytest.FixtureRequest, fixture: str) -> None:
    path = _path(request, fixture)
    reranker = Reranker.from_pretrained(str(path), device="cpu", dtype="float32")
    family = reranker.family
    model = family.decoder.model
    vocab = model.config.vocab_size
    assert not type(model).__name__.endswith("ForCausalLM") and not hasattr(model, "lm_head")
    assert tuple(family.head.shape) == (model.config.hidden_size,)
    assert family.head.dtype == torch.float32
    widths: list[int] = []
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out: widths.append(out.shape[-1]) if isinstance(out, torch.Tensor) else None
        )
        for module in model.modules()
    ]
    reranker.score(_mixed_pairs()[:6])
    for hook in hooks:
        hook.remove()
    assert widths and vocab not in widths and max(widths) < vocab


@pytest.mark.parametrize("fixture", FAMILIES)
def test_prefix_cache_rows_are_read_only_views(request: pytest.FixtureRequest, fixture: str) -> None:
    """The tail pass reads the prefix keys/values through views and stores nothing (memory of a plain forward)."""
    from transformers import DynamicCache

    model = Reranker.from_pretrained(str(_path(request, fixture)), device="cpu").family.decoder.model
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([[5, 6, 7]]), past_key_values=cache, use_cache=True)
    rows = prefix_cache_for_rows(cache, torch.zeros(4, dtype=torch.long))
    assert {type(layer).__name__ for layer in rows.layers} == {"PrefixLayer"}
    assert rows.get_seq_length() == 3 and rows.layers[0].keys.shape[0] == 4
    model(input_ids=torch.ones((4, 2), dtype=torch.long), past_key_values=rows, use_cache=True)
    assert rows.get_seq_length() == 3  # the tail's keys/values were not appended
