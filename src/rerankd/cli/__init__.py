"""The ``rerankd`` command line. Each command group lives in its own module and registers on ``app``."""

from __future__ import annotations

from rerankd.cli import admin as _admin  # noqa: F401  (registers commands)
from rerankd.cli import batch as _batch  # noqa: F401  (registers commands)
from rerankd.cli import bench as _bench  # noqa: F401  (registers commands)
from rerankd.cli import compare as _compare  # noqa: F401  (registers commands)
from rerankd.cli import evaluate as _evaluate  # noqa: F401  (registers commands)
from rerankd.cli import export as _export  # noqa: F401  (registers commands)
from rerankd.cli import rank as _rank  # noqa: F401  (registers commands)
from rerankd.cli import search as _search  # noqa: F401  (registers commands)
from rerankd.cli import serve as _serve  # noqa: F401  (registers commands)
from rerankd.cli.app import app

__all__ = ["app"]
