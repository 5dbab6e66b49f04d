"""The transformers-4 reference for bge-gemma2-lightweight, driven over a pipe (tests/families_new/tf4).

The venv is built on first use by tf4/setup.sh (about a minute from the local wheel cache; .ci/run builds it up
front). Tests using :func:`lightweight_oracle` skip, saying why, only when it cannot be built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent / "tf4"
VENV_PYTHON = HERE.parents[2] / "benchmarks" / ".venvs" / "tf4-oracle" / "bin" / "python"


@cache
def _venv_problem() -> str | None:
    """None when the venv is ready, else why it could not be built."""
    try:
        done = subprocess.run(["bash", str(HERE / "setup.sh")], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"tf4-oracle venv could not be built: {exc}"
    if done.returncode != 0 or not VENV_PYTHON.exists():
        return f"tf4-oracle venv could not be built (tests/families_new/tf4/setup.sh): {done.stderr.strip()[-400:]}"
    return None


class Tf4Oracle:
    """One worker process (FlagEmbedding on transformers 4.46) answering scoring requests."""

    def __init__(self, threads: int = 2) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
        env.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(
            [str(VENV_PYTHON), str(HERE / "oracle_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.last_seconds = 0.0

    def score(self, path: Path, pairs: list[tuple[str, str]], **options: Any) -> list[Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"path": str(path), "pairs": pairs, **options}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"tf4 oracle worker exited with {self.process.wait()}")
        reply = json.loads(line)
        self.last_seconds = float(reply["seconds"])
        return list(reply["scores"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def start_oracle(threads: int = 2) -> Tf4Oracle:
    """A running oracle, or a pytest skip naming why the transformers-4 venv is unavailable."""
    problem = _venv_problem()
    if problem is not None:
        pytest.skip(problem)
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("the tf4 oracle venv is built for POSIX shells")
    return Tf4Oracle(threads)
