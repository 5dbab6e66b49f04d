"""Import the optional packages of the ``eval`` extra, failing with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from rerankd.errors import MissingDependency

EVAL_EXTRA_HINT = "pip install 'rerankd[eval]'"


def import_eval_module(name: str, purpose: str) -> ModuleType:
    """``importlib.import_module(name)``, or :class:`MissingDependency` naming the ``eval`` extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        root = name.split(".")[0]
        raise MissingDependency(f"{purpose} needs the '{root}' package of the eval extra: {EVAL_EXTRA_HINT}") from exc
