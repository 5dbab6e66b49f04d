"""mxbai-rerank-v2 vs the mxbai-rerank package's own scoring on a tiny random Qwen2 (named like the published model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.errors import UnsupportedModel
from rerankd.families.base import CallOptions
from rerankd.loading import resolve_model
from rerankd.registry import detect_family
from tests.families_new.mxbai_oracle import mxbai_reference, mxbai_scores
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 40)
INSTRUCTION = "Find passages about animals"


def _docs() -> list[str]:
    return corpus(seed=3, n=10, min_words=3, max_words=40) + corpus(seed=4, n=3, min_words=250, max_words=320)


def _pairs() -> list[tuple[str, str]]:
    docs = _docs()
    return [(QUERY, d) for d in docs] + [(LONG_QUERY, d) for d in docs[:4]]


def _load(path: Path, **options: object) -> Reranker:
    return Reranker.from_pretrained(str(path), device="cpu", dtype="float32", normalize=False, **options)


def test_detected_by_published_name(mxbai_path: Path) -> None:
    assert detect_family(resolve_model(str(mxbai_path))).name == "mxbai-rerank-v2"
    reranker = Reranker.from_pretrained(str(mxbai_path), device="cpu", dtype="float32")
    assert reranker.info.family == "mxbai-rerank-v2"
    # the query+document budget is capped by the position table (1024) minus the template
    family = reranker.family
    assert family.limits.max_length == 1024


@pytest.mark.oracle
@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_matches_mxbai_package(mxbai_path: Path, instruction: str | None) -> None:
    pairs = _pairs()
    got = np.array(_load(mxbai_path).score(pairs, instruction=instruction))
    want = mxbai_scores(mxbai_reference(mxbai_path), pairs, instruction)
    assert np.abs(got - want).max() <= 1e-4
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()
    assert got.std() > 0.3


@pytest.mark.oracle
def test_matches_mxbai_package_with_short_budget(mxbai_path: Path) -> None:
    """max_length=96: the query is capped at 72 tokens and documents cut only_second-style."""
    pairs = _pairs()
    reference = mxbai_reference(mxbai_path)
    reference.max_length = 96
    got = np.array(_load(mxbai_path, max_length=96).score(pairs))
    assert np.abs(got - mxbai_scores(reference, pairs)).max() <= 1e-4


def test_prefix_sharing_is_exact_and_declared(mxbai_path: Path) -> None:
    pairs = _pairs()
    shared, whole = _load(mxbai_path), _load(mxbai_path, prefix_sharing=False)
    assert np.abs(np.array(shared.score(pairs)) - np.array(whole.score(pairs))).max() <= 1e-4
    encoded = shared.family.encode_pairs(QUERY, _docs()[:3], CallOptions())
    assert len({item.input_ids[: item.prefix_length] for item in encoded}) == 1
    assert all(0 < item.prefix_length < len(item) for item in encoded)


def test_batch_invariance(mxbai_path: Path) -> None:
    reranker = _load(mxbai_path)
    pairs = _pairs()
    together = np.array(reranker.score(pairs))
    alone = np.array([reranker.score([pair])[0] for pair in pairs[:5]])
    assert np.abs(together[:5] - alone).max() <= 1e-4


def test_normalized_is_sigmoid_of_raw(mxbai_path: Path) -> None:
    pairs = _pairs()[:4]
    raw = np.array(_load(mxbai_path).score(pairs))
    norm = np.array(Reranker.from_pretrained(str(mxbai_path), device="cpu", dtype="float32").score(pairs))
    assert np.allclose(norm, 1 / (1 + np.exp(-raw)), atol=1e-7)


# Computed once from the seeded fixture; a change here means the recipe or the model math moved.
GOLDEN_RAW = {0: -3.428382, 5: -3.258754, 11: -5.281892, 14: -1.805582}


def test_golden_scores(mxbai_path: Path) -> None:
    pairs = _pairs()
    got = _load(mxbai_path).score([pairs[i] for i in GOLDEN_RAW])
    assert np.allclose(got, list(GOLDEN_RAW.values()), atol=1e-4), got


def _renamed(source: Path, folder: Path, origin: str | None) -> Path:
    """A copy of the tiny model under another folder name; ``origin`` as config.json's ``_name_or_path``."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.pop("_name_or_path", None)
    if origin is not None:
        config["_name_or_path"] = origin
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize("origin", ["mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2"])
def test_renamed_folder_detected_by_the_published_config(mxbai_path: Path, tmp_path: Path, origin: str) -> None:
    """The published configs name the model in ``_name_or_path``: a renamed copy needs no family=."""
    renamed = _renamed(mxbai_path, tmp_path / "my-reranker", origin)
    assert detect_family(resolve_model(str(renamed))).name == "mxbai-rerank-v2"
    pairs = _pairs()[:4]
    assert np.allclose(_load(renamed).score(pairs), _load(mxbai_path).score(pairs), atol=1e-6)


@pytest.mark.parametrize("origin", [None, "Qwen/Qwen2.5-0.5B-Instruct", "/ckpt/mxbai-rerank-base-v1"])
def test_plain_qwen2_causal_lm_asks_for_the_family(mxbai_path: Path, tmp_path: Path, origin: str | None) -> None:
    renamed = _renamed(mxbai_path, tmp_path / "my-reranker", origin)
    with pytest.raises(UnsupportedModel) as caught:
        detect_family(resolve_model(str(renamed)))
    assert 'If it is mxbai-rerank-v2 (or a fine-tune of it), pass family="mxbai-rerank-v2"' in str(caught.value)
    assert _load(renamed, family="mxbai-rerank-v2").info.family == "mxbai-rerank-v2"
