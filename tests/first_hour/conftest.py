"""Run the installed ``rerankd`` entry point as a new user would: a fresh process, the network unreachable, and
optional packages made absent on request.

- The hub is unreachable: ``HF_ENDPOINT`` points at a local port nothing listens on (connection refused at once)
  and ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` are unset, so rerankd must cope without being told.
- ``HF_HOME`` and ``XDG_CACHE_HOME`` are per-test folders: nothing is read from or written to the user's caches.
- ``absent=("fastapi", ...)``: a ``sitecustomize`` on ``PYTHONPATH`` hides those top-level modules from the path
  finder, so ``import fastapi`` raises ``ModuleNotFoundError`` and ``importlib.util.find_spec`` returns None,
  exactly as if the package were not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("rerankd")
SITECUSTOMIZE = """
import os
from importlib.machinery import PathFinder

_ABSENT = {name for name in os.environ.get("RERANKD_TEST_ABSENT", "").split(",") if name}
if _ABSENT:
    _find_spec = PathFinder.find_spec

    def _hidden(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _ABSENT:
            return None
        return _find_spec(fullname, path, target)

    PathFinder.find_spec = classmethod(_hidden)
"""


@dataclass(frozen=True)
class Done:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hf_cache_entry(hf_home: Path, repo_id: str, model: Path) -> Path:
    """Lay ``model``'s files out as the Hugging Face hub cache does (``hub/models--org--name/snapshots/<sha>``)."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model, snapshot, symlinks=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot


Cli = Callable[..., Done]


@pytest.fixture()
def user_env(tmp_path: Path) -> dict[str, str]:
    """A new user's environment: no HF_*/RERANKD_* settings, the hub unreachable, per-test caches."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    hidden = ("HF_", "TRANSFORMERS_", "RERANKD_", "PYTHONPATH", "COLUMNS")
    base = {key: value for key, value in os.environ.items() if not key.startswith(hidden)}
    base.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        HF_HOME=str(tmp_path / "hf"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        PYTHONPATH=str(site),
        RERANKD_CPU_BF16="0",
        COLUMNS="200",
    )
    return base


@pytest.fixture()
def cli(tmp_path: Path, user_env: dict[str, str]) -> Cli:
    """``cli(*args, absent=(), env={}, stdin=None, timeout=240)`` runs ``rerankd ARGS`` in a new process;
    ``cli(python=CODE)`` runs ``python -c CODE`` in the same environment instead."""

    def run(
        *args: str,
        absent: Sequence[str] = (),
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 240,
        python: str | None = None,
    ) -> Done:
        environment = {**user_env, "RERANKD_TEST_ABSENT": ",".join(absent), **(env or {})}
        command = [sys.executable, "-c", python] if python is not None else [str(EXE), *args]
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            check=False,
            cwd=tmp_path,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    return run
