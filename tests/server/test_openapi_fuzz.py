"""The OpenAPI schema describes the server: a bounded schemathesis run (every check, positive and negative data,
fixed seed) against a live server with an API key finds nothing. The long run (>= 2,000 requests) is in
docs/api.md; the exceptions JSON Schema cannot express are in tests/server/schemathesis.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rerankd import Reranker
from tests.server.conftest import ServerFactory

pytestmark = pytest.mark.timeout(600)
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failure(start_server: ServerFactory, bert: Reranker, minilm: Reranker) -> None:
    pytest.importorskip("schemathesis")
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable is not None, "schemathesis is in the test extra"
    server = start_server({"tiny": bert, "minilm": minilm}, api_key=("fuzz-key",), routes=("ab=tiny:50,minilm:50",))
    command = [
        executable, "--config-file", str(CONFIG), "run", f"{server.url}/openapi.json",
        "-H", "Authorization: Bearer fuzz-key", "--checks", "all", "--mode", "all",
        "--max-examples", "12", "--seed", "20261201", "--no-color",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=540)
    summary = run.stdout[-6000:]
    assert run.returncode == 0 and "No issues found" in summary, summary
