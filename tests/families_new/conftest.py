"""Session fixtures for the families of issue 18: tiny random model folders built in-process (seconds), and the
reference implementations that run outside the project venv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.families_new.pylate_oracle import PylateOracle, start_pylate
from tests.families_new.tf4_oracle import Tf4Oracle, start_oracle
from tests.families_new.tiny_colbert import build_colbert_bert, build_colbert_xlmr
from tests.families_new.tiny_lightweight import build_lightweight
from tests.families_new.tiny_m3 import build_m3
from tests.families_new.tiny_mxbai import build_mxbai


@pytest.fixture(scope="session")
def new_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-new-families")


@pytest.fixture(scope="session")
def lightweight_path(new_root: Path) -> Path:
    """Not named after the published id: detection must come from config.json (layer_wise on a gemma model)."""
    return build_lightweight(new_root / "tiny-gemma2-lightweight")


@pytest.fixture(scope="session")
def tf4_oracle() -> Iterator[Tf4Oracle]:
    oracle = start_oracle()
    yield oracle
    oracle.close()


@pytest.fixture(scope="session")
def mxbai_path(new_root: Path) -> Path:
    """Named like the published model: a Qwen2 causal LM is recognised by its id (MODELS.md, detection)."""
    return build_mxbai(new_root / "mxbai-rerank-base-v2")


@pytest.fixture(scope="session")
def m3_path(new_root: Path) -> Path:
    """Not named bge-m3: detection must come from the folder (colbert_linear.pt + sparse_linear.pt)."""
    return build_m3(new_root / "tiny-m3")


@pytest.fixture(scope="session")
def colbert_path(new_root: Path) -> Path:
    """answerai-colbert style PyLate folder (BERT, [unused0]/[unused1], expansion not attended)."""
    return build_colbert_bert(new_root / "tiny-colbert")


@pytest.fixture(scope="session")
def jina_colbert_path(new_root: Path) -> Path:
    """jina-colbert-v2 style PyLate folder (XLM-R, marker tokens, expansion attended, short lengths)."""
    return build_colbert_xlmr(new_root / "tiny-jina-colbert")


@pytest.fixture(scope="session")
def pylate_oracle() -> Iterator[PylateOracle]:
    oracle = start_pylate()
    yield oracle
    oracle.close()
