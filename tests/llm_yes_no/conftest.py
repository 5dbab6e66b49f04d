"""Session fixtures for the yes/no LLM rerankers: tiny random Qwen3 / Gemma models saved under the published
ids' folder names (so detection by name is exercised) and unnamed copies (gemma2-lightweight: tests/families_new)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.llm_yes_no.tiny_llms import build_gemma, build_qwen3


@pytest.fixture(scope="session")
def llm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-llm-rerankers")


@pytest.fixture(scope="session")
def qwen_path(llm_root: Path) -> Path:
    return build_qwen3(llm_root / "Qwen3-Reranker-0.6B", seed=0, tied=True)


@pytest.fixture(scope="session")
def qwen_untied_path(llm_root: Path) -> Path:
    return build_qwen3(llm_root / "Qwen3-Reranker-8B", seed=1, tied=False)


@pytest.fixture(scope="session")
def gemma_path(llm_root: Path) -> Path:
    return build_gemma(llm_root / "bge-reranker-v2-gemma", seed=0)


@pytest.fixture(scope="session")
def unnamed_qwen_path(llm_root: Path, qwen_path: Path) -> Path:
    return Path(shutil.copytree(qwen_path, llm_root / "my-finetune"))
