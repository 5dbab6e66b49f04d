"""Importing Ray (or saying which extra brings it) and joining or starting a Ray instance."""

from __future__ import annotations

import logging
from typing import Any

from rerankd.errors import MissingDependency

RAY_HINT = "pip install 'rerankd[ray]'"


def require_ray() -> Any:
    """The ``ray`` module, or :class:`MissingDependency` naming the extra."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency(f"running on Ray needs the ray extra: {RAY_HINT}") from exc
    return ray


def connect(address: str | None = "local") -> Any:
    """Join the Ray instance this process already uses, or ``address`` (``local``: start one on this machine;
    ``auto``: the cluster this node belongs to; ``ray://host:10001``: a remote cluster through Ray Client)."""
    ray = require_ray()
    if not ray.is_initialized():
        target = None if address in (None, "", "local") else address
        ray.init(address=target, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    return ray
