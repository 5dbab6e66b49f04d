"""bge-reranker-v2-minicpm-layerwise vs FlagEmbedding on the same tiny random weights.

Oracles: FlagEmbedding's shipped ``modeling_minicpm_reranker.py`` (run under transformers 5 as MODELS.md §3 says)
inside FlagEmbedding's own end-to-end ``LayerWiseFlagLLMReranker`` recipe (its tokenisation, truncation, padding
and pooling), with only the model loading replaced by the working recipe (test-only tweak).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import CallOptions, ModelOptions
from rerankd.families.layerwise import LayerwiseFamily, load_layerwise
from rerankd.loading import ModelFiles, resolve_model
from rerankd.registry import detect_family
from tests.llm_minicpm.tiny_minicpm import N_LAYERS, START_LAYER, flag_layerwise
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 8)
CUTOFF_SETS: list[list[int] | None] = [[START_LAYER], [5], [4, N_LAYERS], None]
PROMPT = "Rank passages about animals."
# Seeded fixture, cutoffs [START_LAYER, N_LAYERS], raw logits (see test_golden_scores).
GOLDEN = [[-4.77793, 7.14399], [-4.9468, 7.07619], [-4.84892, 7.53506]]


def _pairs() -> list[tuple[str, str]]:
    docs = corpus(seed=3, n=8, min_words=3, max_words=30) + corpus(seed=4, n=3, min_words=60, max_words=90)
    return [(QUERY, d) for d in docs] + [(LONG_QUERY, d) for d in docs[:4]]


@pytest.fixture(scope="module")
def flag(layerwise_path: Path) -> Iterator[Any]:
    """FlagEmbedding's LayerWiseFlagLLMReranker; only its model loading is swapped for the working recipe."""
    from FlagEmbedding import LayerWiseFlagLLMReranker
    from FlagEmbedding.inference.reranker.decoder_only import layerwise as flag_module

    class WorkingLoader:
        @staticmethod
        def from_pretrained(name: str, **_: Any) -> Any:
            return flag_layerwise(Path(name))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flag_module, "LayerWiseMiniCPMForCausalLM", WorkingLoader)
        yield LayerWiseFlagLLMReranker(str(layerwise_path), use_fp16=False, devices=["cpu"], batch_size=8)


@pytest.fixture(scope="module")
def ours(layerwise_path: Path) -> Reranker:
    return Reranker.from_pretrained(str(layerwise_path), device="cpu", dtype="float32", normalize=False)


def _as_table(scores: Any, n_cutoffs: int) -> np.ndarray:
    """(pairs, cutoffs) from rerankd's per-layer rows (one tuple per pair, one score per cutoff)."""
    return np.array(scores, dtype=np.float64).reshape(-1, n_cutoffs)


def _flag_scores(flag: Any, pairs: Sequence[tuple[str, str]], cutoffs: list[int] | None, **kw: Any) -> np.ndarray:
    raw = flag.compute_score([list(p) for p in pairs], cutoff_layers=cutoffs, normalize=False, **kw)
    n = 1 if cutoffs is None else len(cutoffs)
    return np.array(raw, dtype=np.float64).reshape(n, -1).T  # FlagEmbedding returns one list per layer


@pytest.mark.oracle
@pytest.mark.parametrize("cutoffs", CUTOFF_SETS, ids=lambda c: f"cutoffs={c}")
def test_matches_flag_layerwise_reranker(ours: Reranker, flag: Any, cutoffs: list[int] | None) -> None:
    pairs = _pairs()
    want = _flag_scores(flag, pairs, cutoffs)
    got = _as_table(ours.score_layers(pairs, cutoff_layers=cutoffs), want.shape[1])
    assert got.shape == want.shape == (len(pairs), 1 if cutoffs is None else len(cutoffs))
    assert np.abs(got - want).max() <= 1e-4
    for column in range(want.shape[1]):
        assert np.argsort(-got[:, column]).tolist() == np.argsort(-want[:, column]).tolist()
        assert got[:, column].std() > 0.05  # scores must differ between documents for the order check to mean much


@pytest.mark.oracle
def test_matches_flag_with_truncation_and_prompt(layerwise_path: Path, flag: Any) -> None:
    pairs = _pairs()
    ours = Reranker.from_pretrained(str(layerwise_path), device="cpu", dtype="float32", normalize=False, max_length=40)
    want = _flag_scores(flag, pairs, [3, 7], max_length=40, prompt=PROMPT)
    got = _as_table(ours.score_layers(pairs, cutoff_layers=[7, 3], instruction=PROMPT), 2)
    assert np.abs(got - want).max() <= 1e-4
    assert any(item.truncated for item in ours.family.encode_pairs(LONG_QUERY, [pairs[-1][1]], CallOptions()))


def test_layers_past_the_deepest_cutoff_are_not_computed(ours: Reranker) -> None:
    assert isinstance(ours.family, LayerwiseFamily)
    layers = ours.family.network.model.layers
    calls: collections.Counter[int] = collections.Counter()
    seq_lengths: dict[int, int] = {}

    def hook(index: int) -> Any:
        def record(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            calls[index] += 1
            seq_lengths[index] = output.shape[1]

        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        ours.score(_pairs(), cutoff_layers=[3, 5])
    finally:
        for handle in handles:
            handle.remove()
    assert all(calls[i] >= 1 for i in range(5))
    assert len({calls[i] for i in range(5)}) == 1  # every batch ran layers 1..5 once
    assert all(calls[i] == 0 for i in range(5, N_LAYERS))
    assert seq_lengths[4] == 1 and seq_lengths[3] > 1  # the exit layer only computes the scored token


def test_one_cutoff_gives_one_score_and_rank_uses_the_deepest(ours: Reranker) -> None:
    docs = [d for _, d in _pairs()[:6]]
    single = ours.score([(QUERY, d) for d in docs], cutoff_layers=[6])
    assert all(isinstance(s, float) for s in single)
    assert ours.score([(QUERY, d) for d in docs], cutoff_layers=[3, 6]) == single  # score() gives the deepest
    ranked = ours.rank(QUERY, docs, cutoff_layers=[6, 3])
    assert all(r.layer_scores is not None and len(r.layer_scores) == 2 for r in ranked)
    assert [r.score for r in ranked] == sorted(single, reverse=True)
    assert [r.layer_scores[1] for r in ranked if r.layer_scores] == [r.score for r in ranked]


def test_batch_invariance(ours: Reranker) -> None:
    pairs = _pairs()
    together = np.array(ours.score_layers(pairs, cutoff_layers=[2, 9]))
    alone = np.array([ours.score_layers([pair], cutoff_layers=[2, 9])[0] for pair in pairs[:4]])
    assert np.abs(together[:4] - alone).max() <= 1e-5


def test_prompt_override_changes_scores(ours: Reranker) -> None:
    pairs = _pairs()[:5]
    default = np.array(ours.score(pairs))
    other = np.array(ours.score(pairs, instruction=PROMPT))
    assert np.abs(default - other).max() > 1e-3


@pytest.mark.parametrize("bad", [[START_LAYER - 1], [N_LAYERS + 1], [0], [START_LAYER, N_LAYERS + 5], [-3]])
def test_invalid_cutoffs_raise(ours: Reranker, bad: list[int]) -> None:
    with pytest.raises(InvalidInput, match=rf"{START_LAYER}\.\.{N_LAYERS}"):
        ours.score(_pairs()[:2], cutoff_layers=bad)
    with pytest.raises(InvalidInput):
        ours.rank(QUERY, ["a doc"], cutoff_layers=bad)


def _load(path: Path, options: ModelOptions) -> LayerwiseFamily:
    return load_layerwise(resolve_model(str(path)), torch.device("cpu"), torch.float32, options, False)


def test_load_time_default_cutoffs(layerwise_path: Path, ours: Reranker) -> None:
    family = _load(layerwise_path, ModelOptions(cutoff_layers=(6, 4)))
    assert family.default_cutoffs == (4, 6)
    batch = family.encode_pairs(QUERY, ["The giant panda eats bamboo.", "Paris is a city."], CallOptions())
    default = family.score(batch, CallOptions())
    assert default.shape == (2, 2)
    assert torch.allclose(default, family.score(batch, CallOptions(cutoff_layers=(4, 6))))
    assert family.score(batch, CallOptions(cutoff_layers=(N_LAYERS,))).shape == (2, 1)  # a call overrides it
    with pytest.raises(InvalidInput, match="cutoff_layers"):
        _load(layerwise_path, ModelOptions(cutoff_layers=(N_LAYERS + 1,)))


def test_golden_scores(ours: Reranker) -> None:
    """Pinned values from the seeded fixture: any silent change of the math or the input layout shows here."""
    pairs = [
        ("what is a panda?", "The giant panda is a bear species of china."),
        ("what is a panda?", "hi"),
        ("capital of france", "Paris is the capital city of france and a river."),
    ]
    got = np.array(ours.score_layers(pairs, cutoff_layers=[START_LAYER, N_LAYERS]))
    want = np.array(GOLDEN)
    assert np.abs(got - want).max() <= 1e-4


def test_detection(layerwise_path: Path) -> None:
    assert detect_family(resolve_model(str(layerwise_path))).name == "minicpm-layerwise"
    by_id = ModelFiles(path=Path("/nowhere/x"), requested="BAAI/bge-reranker-v2-minicpm-layerwise", config={})
    assert detect_family(by_id).name == "minicpm-layerwise"
    by_keys = ModelFiles(
        path=Path("/m"), requested="/m", config={"model_type": "minicpm", "head_type": "simple", "start_layer": 8}
    )
    assert detect_family(by_keys).name == "minicpm-layerwise"


def test_checkpoint_keys_are_checked_strictly(layerwise_path: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    state = load_file(str(layerwise_path / "model.safetensors"))
    for name, edit in [
        ("extra", {**state, "lm_head.99.linear_head.weight": torch.zeros(1, 64)}),
        ("missing", {k: v for k, v in state.items() if k != "model.norm.weight"}),
    ]:
        folder = tmp_path / name
        shutil.copytree(layerwise_path, folder)
        save_file(edit, str(folder / "model.safetensors"))
        with pytest.raises(UnsupportedModel, match=name if name == "missing" else "unexpected"):
            Reranker.from_pretrained(str(folder), device="cpu", dtype="float32")


def test_bfloat16_runs_close_to_float32(layerwise_path: Path, ours: Reranker) -> None:
    pairs = _pairs()
    low = Reranker.from_pretrained(str(layerwise_path), device="cpu", dtype="bfloat16", normalize=False)
    got = np.array(low.score_layers(pairs, cutoff_layers=[3, N_LAYERS]))
    want = np.array(ours.score_layers(pairs, cutoff_layers=[3, N_LAYERS]))
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 0.25
