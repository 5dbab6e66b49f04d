"""Live traffic control: weighted routes, sticky assignment, shadow configuration and models added at run time,
persisted to a state file so a restart keeps the last state.

A route (``main = a:95, b:5``) answers each request from one arm. With a caller-supplied key (``x-rerankd-user``),
the arm is a pure function of ``sha256(route, key)``: one user sees one arm, and when weights move (95/5 -> 50/50)
only the users whose bucket crosses the boundary change arm. Without a key the draw is random.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerankd.errors import InvalidInput, ModelNotFound

logger = logging.getLogger(__name__)

Arms = list[tuple[str, float]]


@dataclass(frozen=True)
class Shadow:
    """Score ``fraction`` of the requests that name ``target`` with ``candidate`` too (off the response path)."""

    candidate: str
    fraction: float
    log: str | None = None  # a JSONL file that gets both rankings of every shadowed request


def bucket(route: str, key: str) -> float:
    """A stable point in [0, 1) for (route, key)."""
    digest = hashlib.sha256(f"{route}\x00{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def draw(arms: Arms, point: float) -> str:
    """The arm whose cumulative weight interval holds ``point`` (in [0, 1) of the total weight)."""
    total = sum(weight for _, weight in arms)
    target, running = point * total, 0.0
    for name, weight in arms:
        running += weight
        if target < running:
            return name
    return next(name for name, weight in reversed(arms) if weight > 0)


class Traffic:
    """Routes, shadows and run-time models of one server; every change is validated, logged and saved."""

    def __init__(self, routes: dict[str, Arms], state_file: str | None = None) -> None:
        self.routes: dict[str, Arms] = dict(routes)
        self.shadows: dict[str, Shadow] = {}
        self.added_models: dict[str, str] = {}  # name -> path, models added through the admin API
        self.removed_models: set[str] = set()  # start-up models removed through the admin API
        self.state_file = Path(state_file) if state_file else None
        self.changes = 0

    # ------------------------------------------------------------------ choosing
    def choose(self, route: str, key: str | None) -> str:
        point = bucket(route, key) if key else random.random()
        return draw(self.routes[route], point)

    # ------------------------------------------------------------------ changing
    def set_weights(self, route: str, weights: dict[str, float], served: set[str]) -> Arms:
        if route in served:
            raise InvalidInput(f"{route!r} is a model name; a route needs a name of its own", param="route")
        unknown = sorted(set(weights) - served)
        if unknown:
            raise ModelNotFound(f"not served here: {', '.join(unknown)}; served: {', '.join(sorted(served))}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise InvalidInput("weights must be >= 0 with a positive sum", param="weights")
        arms = [(name, float(weight)) for name, weight in weights.items()]
        self.routes[route] = arms
        self._changed("route", f"route {route} -> {', '.join(f'{n}:{w:g}' for n, w in arms)}")
        return arms

    def remove_route(self, route: str) -> None:
        if self.routes.pop(route, None) is None:
            raise ModelNotFound(f"no route {route!r}")
        self.shadows.pop(route, None)
        self._changed("route", f"route {route} removed")

    def set_shadow(self, target: str, shadow: Shadow | None, served: set[str]) -> None:
        if target not in served and target not in self.routes:
            raise ModelNotFound(f"no model or route {target!r}")
        if shadow is None:
            self.shadows.pop(target, None)
            self._changed("shadow", f"shadow of {target} off")
            return
        if shadow.candidate not in served:
            raise ModelNotFound(f"shadow candidate {shadow.candidate!r} is not served here")
        if not 0 <= shadow.fraction <= 1:
            raise InvalidInput("fraction must be between 0 and 1", param="fraction")
        self.shadows[target] = shadow
        self._changed("shadow", f"shadow of {target}: {shadow.candidate} on {shadow.fraction:.0%} of requests")

    def model_added(self, name: str, path: str) -> None:
        self.added_models[name] = path
        self.removed_models.discard(name)
        self._changed("model", f"model {name} added from {path}")

    def model_removed(self, name: str) -> None:
        if self.added_models.pop(name, None) is None:
            self.removed_models.add(name)
        self.shadows = {t: s for t, s in self.shadows.items() if t != name and s.candidate != name}
        self._changed("model", f"model {name} removed")

    def referencing(self, model: str) -> list[str]:
        """Routes that still send traffic to ``model``."""
        return [route for route, arms in self.routes.items() if any(n == model and w > 0 for n, w in arms)]

    # ------------------------------------------------------------------ persistence
    def as_dict(self) -> dict[str, Any]:
        return {
            "routes": {route: dict(arms) for route, arms in self.routes.items()},
            "shadows": {target: asdict(shadow) for target, shadow in self.shadows.items()},
            "added_models": self.added_models,
            "removed_models": sorted(self.removed_models),
        }

    def load(self) -> bool:
        """Apply the state file, if there is one (models are loaded by the engine from ``added_models``)."""
        if self.state_file is None or not self.state_file.is_file():
            return False
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        self.routes = {route: [(n, float(w)) for n, w in arms.items()] for route, arms in data["routes"].items()}
        self.shadows = {target: Shadow(**shadow) for target, shadow in data.get("shadows", {}).items()}
        self.added_models = dict(data.get("added_models", {}))
        self.removed_models = set(data.get("removed_models", []))
        logger.info("traffic state restored from %s", self.state_file)
        return True

    def save(self) -> None:
        """Write the state atomically (a crash leaves the previous file or the new one, never half of one)."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.state_file.parent, prefix=".state-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(self.as_dict(), out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.state_file)

    def _changed(self, kind: str, what: str) -> None:
        self.changes += 1
        logger.info("traffic change (%s): %s", kind, what)
        self.save()
