"""openbmb/MiniCPM-Reranker (bidirectional MiniCPM sequence classifier) on tiny random weights.

Oracle (independent of rerankd's MiniCPM code): FlagEmbedding's shipped MiniCPM decoder layers
(``modeling_minicpm_reranker.py``: embeddings, RMSNorm, RoPE, attention, MLP, depth scaling) driven layer by layer
with a full (bidirectional) additive attention mask over the real tokens instead of its causal mask, then the
final norm, the last real token and the ``score`` head. Its inputs are built here from the model card's recipe:
``<s> + tok(query text) + </s> + tok(document)``, pairs cut "longest first" the way transformers' slow tokenizers
do (one token at a time from the longer side, the document on ties).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.families.minicpm import truncate_longest_first
from rerankd.loading import ModelFiles, resolve_model
from rerankd.registry import detect_family
from tests.llm_minicpm.tiny_minicpm import flag_classes
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 6)
INSTRUCTION = "Rank passages about animals."
# Seeded fixture, no instruction, raw logits (see test_golden_scores).
GOLDEN = [0.3223, 2.90893, -0.12957]


def _pairs() -> list[tuple[str, str]]:
    docs = corpus(seed=5, n=8, min_words=3, max_words=30) + corpus(seed=6, n=3, min_words=50, max_words=80)
    return [(QUERY, d) for d in docs] + [(LONG_QUERY, d) for d in docs[:4]]


def _card_query(query: str, instruction: str | None) -> str:
    return f"Instruction: {instruction} Query: {query}" if instruction else f"Query: {query}"


def _cut_one_at_a_time(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    while len(first) + len(second) > budget:
        if len(first) > len(second):
            first = first[:-1]
        else:
            second = second[:-1]
    return first, second


def _card_inputs(
    path: Path, pairs: Sequence[tuple[str, str]], instruction: str | None, max_length: int
) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    rows = []
    for query, doc in pairs:
        q = tok(_card_query(query, instruction), add_special_tokens=False)["input_ids"]
        d = tok(doc, add_special_tokens=False)["input_ids"]
        q, d = _cut_one_at_a_time(q, d, max_length - 2)
        rows.append([tok.bos_token_id, *q, tok.eos_token_id, *d])
    return rows


@torch.no_grad()
def _oracle(path: Path, rows: list[list[int]], *, causal: bool) -> np.ndarray:
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import LayerWiseMiniCPMModel
    from safetensors.torch import load_file

    config_cls, _ = flag_classes()
    config = config_cls(**json.loads((path / "config.json").read_text()))
    config.rope_scaling, config.use_cache, config._attn_implementation = None, False, "sdpa"
    state = load_file(str(path / "model.safetensors"))
    body = LayerWiseMiniCPMModel(config).eval()
    body.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    longest = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (longest - len(r)) for r in rows])
    valid = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows]).bool()
    allowed = valid[:, None, None, :].expand(-1, 1, longest, longest)
    if causal:
        allowed = allowed & torch.ones(longest, longest, dtype=torch.bool).tril()
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    positions = torch.arange(longest)[None]
    hidden = body.embed_tokens(ids) * config.scale_emb
    for layer in body.layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions)[0]
    hidden = body.norm(hidden)
    last = hidden[torch.arange(len(rows)), valid.sum(dim=1) - 1]
    return (last @ state["score.weight"].T)[:, 0].double().numpy()


@pytest.fixture(scope="module")
def ours(minicpm_reranker_path: Path) -> Reranker:
    return Reranker.from_pretrained(str(minicpm_reranker_path), device="cpu", dtype="float32", normalize=False)


@pytest.mark.oracle
@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_matches_bidirectional_oracle(ours: Reranker, minicpm_reranker_path: Path, instruction: str | None) -> None:
    pairs = _pairs()
    got = np.array(ours.score(pairs, instruction=instruction))
    want = _oracle(minicpm_reranker_path, _card_inputs(minicpm_reranker_path, pairs, instruction, 1024), causal=False)
    assert np.abs(got - want).max() <= 1e-4
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()
    assert got.std() > 0.05


@pytest.mark.oracle
def test_matches_oracle_when_truncating(minicpm_reranker_path: Path) -> None:
    pairs = _pairs()
    ours = Reranker.from_pretrained(
        str(minicpm_reranker_path), device="cpu", dtype="float32", normalize=False, max_length=33
    )
    encoded = ours.family.encode_pairs(LONG_QUERY, [pairs[-1][1]])
    assert encoded[0].truncated and len(encoded[0]) == 33
    got = np.array(ours.score(pairs))
    want = _oracle(minicpm_reranker_path, _card_inputs(minicpm_reranker_path, pairs, None, 33), causal=False)
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.oracle
def test_bidirectional_differs_from_causal(ours: Reranker, causal_reranker_path: Path) -> None:
    """Same weights, only ``is_causal`` differs: scores must differ, and the causal one matches a causal oracle."""
    pairs = _pairs()
    causal = Reranker.from_pretrained(str(causal_reranker_path), device="cpu", dtype="float32", normalize=False)
    bidirectional_scores = np.array(ours.score(pairs))
    causal_scores = np.array(causal.score(pairs))
    assert np.abs(bidirectional_scores - causal_scores).min() > 1e-3
    want = _oracle(causal_reranker_path, _card_inputs(causal_reranker_path, pairs, None, 1024), causal=True)
    assert np.abs(causal_scores - want).max() <= 1e-4


def test_longest_first_matches_one_at_a_time_cutting() -> None:
    for n_first in range(0, 12):
        for n_second in range(0, 12):
            for budget in range(0, 20):
                first, second = list(range(n_first)), list(range(100, 100 + n_second))
                assert truncate_longest_first(first, second, budget) == _cut_one_at_a_time(first, second, budget)


def test_batch_invariance(ours: Reranker) -> None:
    pairs = _pairs()
    together = np.array(ours.score(pairs))
    alone = np.array([ours.score([pair])[0] for pair in pairs[:4]])
    assert np.abs(together[:4] - alone).max() <= 1e-5


def test_instruction_changes_scores_and_input(ours: Reranker) -> None:
    pairs = _pairs()[:5]
    assert np.abs(np.array(ours.score(pairs)) - np.array(ours.score(pairs, instruction=INSTRUCTION))).max() > 1e-3
    from rerankd.families.base import CallOptions

    plain = ours.family.encode_pairs(QUERY, ["doc"], CallOptions())[0]
    instructed = ours.family.encode_pairs(QUERY, ["doc"], CallOptions(instruction=INSTRUCTION))[0]
    assert len(instructed) > len(plain) and instructed.input_ids[-len(plain) + 1 :] == plain.input_ids[1:]


def test_normalized_scores_are_sigmoid(minicpm_reranker_path: Path, ours: Reranker) -> None:
    pairs = _pairs()[:4]
    norm = np.array(Reranker.from_pretrained(str(minicpm_reranker_path), device="cpu", dtype="float32").score(pairs))
    assert np.allclose(norm, 1 / (1 + np.exp(-np.array(ours.score(pairs)))), atol=1e-7)


def test_golden_scores(ours: Reranker) -> None:
    """Pinned values from the seeded fixture: any silent change of the math or the input layout shows here."""
    pairs = [
        ("what is a panda?", "The giant panda is a bear species of china."),
        ("what is a panda?", "hi"),
        ("capital of france", "Paris is the capital city of france and a river."),
    ]
    assert np.abs(np.array(ours.score(pairs)) - np.array(GOLDEN)).max() <= 1e-4


def test_detection_is_not_taken_by_the_generic_cross_encoder(minicpm_reranker_path: Path) -> None:
    assert detect_family(resolve_model(str(minicpm_reranker_path))).name == "minicpm-reranker"
    by_id = ModelFiles(path=Path("/nowhere/x"), requested="openbmb/MiniCPM-Reranker", config={})
    assert detect_family(by_id).name == "minicpm-reranker"
