"""Tests that need a program outside Python (redis-server, prometheus, kubectl) skip where it is missing, except in
CI's locked stage: `.ci/run` sets RERANKD_CI_STRICT=1 after installing them, so a failed install turns CI red instead
of quietly skipping the tests that need it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    if os.environ.get("RERANKD_CI_STRICT") == "1":
        pytest.fail(f"{message} — CI must run this test (RERANKD_CI_STRICT=1)", pytrace=False)
    pytest.skip(message)
