"""Changing what a running server serves: models added (loaded off the request path) and removed, weights and
shadows set, every change validated, counted in /metrics and persisted by :class:`~.traffic.Traffic`."""

from __future__ import annotations

import asyncio
import logging

from rerankd.errors import InvalidInput, ModelNotFound
from rerankd.reranker import Reranker
from rerankd.server.admin.traffic import Shadow
from rerankd.server.engine import Engine

logger = logging.getLogger(__name__)


def add_model(engine: Engine, name: str, path: str) -> None:
    """Start loading ``path`` as ``name`` in the background; traffic is untouched until it is ready, and a failed
    load changes nothing (``GET /admin/models`` says why)."""
    if not name or name in engine.models or name in engine.routes or engine.loading.get(name) == "loading":
        raise InvalidInput(f"{name!r} is already served, a route, or loading; pick another name", param="name")
    engine.loading[name] = "loading"
    task = asyncio.get_running_loop().create_task(_load(engine, name, path), name=f"rerankd-load-{name}")
    engine.background.add(task)
    task.add_done_callback(engine.background.discard)


async def _load(engine: Engine, name: str, path: str) -> None:
    try:
        reranker = await asyncio.to_thread(Reranker.from_pretrained, path, engine.settings.load_options())
    except Exception as exc:  # a failed load is reported, never served
        logger.exception("loading %s from %s failed; traffic unchanged", name, path)
        engine.loading[name] = f"failed: {type(exc).__name__}"
        engine.metrics.admin_changes.labels("model_load_failed").inc()
        return
    engine.serve_model(name, reranker)
    engine.loading.pop(name, None)
    engine.traffic.model_added(name, path)
    engine.metrics.admin_changes.labels("model_added").inc()


async def remove_model(engine: Engine, name: str) -> None:
    """Stop serving ``name`` once no route sends it traffic; its queued work finishes first."""
    if name not in engine.models:
        raise ModelNotFound(f"no served model {name!r}")
    if busy := engine.traffic.referencing(name):
        raise InvalidInput(f"{', '.join(busy)} still send traffic to {name}: set its weight to 0 first", param="name")
    served = engine.models.pop(name)
    for route, arms in list(engine.routes.items()):
        engine.routes[route] = [(n, w) for n, w in arms if n != name]
    engine.traffic.model_removed(name)
    engine.metrics.set_route_weights(engine.routes)
    engine.metrics.admin_changes.labels("model_removed").inc()
    await served.scheduler.close(engine.settings.drain_timeout_s)


def set_weights(engine: Engine, route: str, weights: dict[str, float]) -> list[tuple[str, float]]:
    arms = engine.traffic.set_weights(route, weights, set(engine.models))
    engine.metrics.set_route_weights(engine.routes)
    engine.metrics.admin_changes.labels("route").inc()
    return arms


def remove_route(engine: Engine, route: str) -> None:
    engine.traffic.remove_route(route)
    engine.metrics.set_route_weights(engine.routes)
    engine.metrics.admin_changes.labels("route").inc()


def set_shadow(engine: Engine, target: str, shadow: Shadow | None) -> None:
    engine.traffic.set_shadow(target, shadow, set(engine.models))
    engine.metrics.admin_changes.labels("shadow").inc()
