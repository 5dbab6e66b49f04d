"""Drive a peer that lives in another venv (benchmarks/peers/worker.py) as a benchmark engine.

The worker is a child of the benchmark process, so every engine runs in one process tree, one at a time, on
the same inputs and thread count. Its reply carries the time spent inside the worker, which is what is
reported: the JSON pipe's cost is not charged to the peer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

VENV_PYTHON = Path(__file__).resolve().parent.parent / ".venvs" / "peers" / "bin" / "python"
WORKER = Path(__file__).resolve().parent / "worker.py"


class PeerUnavailable(Exception):
    """The peer cannot run here (package missing, model type or precision unsupported); the message says why."""


class RemotePeer:
    def __init__(self, engine: str, model_dir: Path, threads: int, calibration: Path | None = None) -> None:
        if not VENV_PYTHON.exists():
            raise SystemExit(f"peer {engine!r} needs its venv: run benchmarks/peers/setup.sh first")
        env = dict(
            os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", INFINITY_ANONYMOUS_USAGE_STATS="0"
        )
        env.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(
            [str(VENV_PYTHON), str(WORKER), engine, str(model_dir), str(threads)]
            + ([str(calibration)] if calibration is not None else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            env=env,
        )
        first = self._read()
        if "skip" in first:
            self.process.wait(timeout=30)
            raise PeerUnavailable(str(first["skip"]))
        self.load_seconds = float(first["load_seconds"])  # type: ignore[arg-type]
        self.detail = str(first.get("detail", ""))
        self.last_seconds = 0.0

    def _read(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker exited with {self.process.wait()}")
        reply: dict[str, object] = json.loads(line)
        return reply

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Scores in input order; one request per query (the peers' rerank call is one query x N docs)."""
        assert self.process.stdin is not None
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (query, _doc) in enumerate(pairs):
            groups[query].append(i)
        scores = [0.0] * len(pairs)
        self.last_seconds = 0.0
        for query, indices in groups.items():
            self.process.stdin.write(json.dumps({"query": query, "documents": [pairs[i][1] for i in indices]}) + "\n")
            self.process.stdin.flush()
            reply = self._read()
            self.last_seconds += float(reply["seconds"])  # type: ignore[arg-type]
            for i, value in zip(indices, reply["scores"], strict=True):  # type: ignore[call-overload]
                scores[i] = float(value)
        return scores

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)
