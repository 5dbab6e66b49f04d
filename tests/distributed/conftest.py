"""One local Ray instance for the whole session (start-up is slow), and the Ray Serve helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the distributed tests need the ray extra: pip install 'rerankd[ray]'")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    """``ray.init(num_cpus=2)``, shared by every test of the session."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def replica_pids(app: str = "rerankd", deployment: str = "rerankd") -> list[int]:
    """Process ids of the live Serve replicas of ``deployment`` in ``app`` (each asked for its own pid)."""
    pids = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#"):
            handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
            try:
                pids.append(ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=20))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue  # a replica that is dying or not up yet
    return sorted(pids)


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)
