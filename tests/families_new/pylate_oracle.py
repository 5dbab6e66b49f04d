"""PyLate (its own venv: tests/families_new/pylate) scoring ColBERT folders over a pipe. Built on first use by
pylate/setup.sh (.ci/run builds it up front); tests skip, saying why, only when it cannot be built."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "pylate"
VENV_PYTHON = HERE.parents[2] / "benchmarks" / ".venvs" / "pylate-oracle" / "bin" / "python"


@cache
def _venv_problem() -> str | None:
    try:
        done = subprocess.run(["bash", str(HERE / "setup.sh")], capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pylate-oracle venv could not be built: {exc}"
    if done.returncode != 0 or not VENV_PYTHON.exists():
        return f"pylate-oracle venv could not be built (tests/families_new/pylate/setup.sh): {done.stderr[-400:]}"
    return None


class PylateOracle:
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

    def score(self, path: Path, pairs: list[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """Scores in input order; one rerank group per distinct query."""
        assert self.process.stdin is not None and self.process.stdout is not None
        groups: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            groups.setdefault(query, []).append(i)
        request = {
            "path": str(path),
            "groups": [[q, [pairs[i][1] for i in rows]] for q, rows in groups.items()],
            "batch_size": batch_size,
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"pylate oracle worker exited with {self.process.wait()}")
        reply = json.loads(line)
        self.last_seconds = float(reply["seconds"])
        out = [0.0] * len(pairs)
        for rows, scores in zip(groups.values(), reply["scores"], strict=True):
            for i, value in zip(rows, scores, strict=True):
                out[i] = float(value)
        return out

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def start_pylate(threads: int = 2) -> PylateOracle:
    problem = _venv_problem()
    if problem is not None:
        pytest.skip(problem)
    return PylateOracle(threads)
