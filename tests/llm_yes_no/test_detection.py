"""Which family serves a plain causal LM: published ids / folder names, explicit family=, typed refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.errors import UnsupportedModel
from rerankd.loading import resolve_model
from rerankd.registry import detect_family, get_spec

PAIRS = [("what is the panda?", "The giant panda is a bear of china."), ("what is the panda?", "Paris is a city.")]


@pytest.mark.parametrize(
    ("fixture", "family"),
    [("qwen_path", "qwen3-yes-no"), ("qwen_untied_path", "qwen3-yes-no"), ("gemma_path", "bge-gemma-yes")],
)
def test_published_folder_names_are_detected(request: pytest.FixtureRequest, fixture: str, family: str) -> None:
    path: Path = request.getfixturevalue(fixture)
    assert detect_family(resolve_model(str(path))).name == family
    assert Reranker.from_pretrained(str(path), device="cpu", dtype="float32").info.family == family


def test_bare_causal_lm_needs_family(unnamed_qwen_path: Path) -> None:
    config = resolve_model(str(unnamed_qwen_path)).config
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    for name in ("qwen3-yes-no", "bge-gemma-yes"):
        assert not get_spec(name).detect(resolve_model(str(unnamed_qwen_path)))
    with pytest.raises(UnsupportedModel, match="family="):
        Reranker.from_pretrained(str(unnamed_qwen_path), device="cpu")


def test_family_override_on_unnamed_folder(unnamed_qwen_path: Path, qwen_path: Path) -> None:
    named = Reranker.from_pretrained(str(qwen_path), device="cpu", dtype="float32")
    forced = Reranker.from_pretrained(str(unnamed_qwen_path), device="cpu", dtype="float32", family="qwen3-yes-no")
    assert forced.info.family == "qwen3-yes-no"
    assert np.allclose(forced.score(PAIRS), named.score(PAIRS), atol=1e-6)


def test_renamed_gemma_folder_is_not_qwen(tmp_path: Path, gemma_path: Path) -> None:
    """Folder names match published ids exactly, not by substring."""
    copy = Path(shutil.copytree(gemma_path, tmp_path / "bge-reranker-v2-gemma-finetuned"))
    with pytest.raises(UnsupportedModel, match="family="):
        detect_family(resolve_model(str(copy)))
