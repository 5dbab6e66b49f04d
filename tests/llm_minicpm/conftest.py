"""Session fixtures: tiny MiniCPM reranker folders, built once (a second or two)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llm_minicpm.tiny_minicpm import build_layerwise, build_reranker


@pytest.fixture(scope="session")
def layerwise_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_layerwise(tmp_path_factory.mktemp("tiny-minicpm-layerwise") / "model")


@pytest.fixture(scope="session")
def minicpm_reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reranker(tmp_path_factory.mktemp("tiny-minicpm-reranker") / "model")


@pytest.fixture(scope="session")
def causal_reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights as ``minicpm_reranker_path`` with ``is_causal: true``."""
    return build_reranker(tmp_path_factory.mktemp("tiny-minicpm-causal") / "model", is_causal=True)
