"""Shadow scoring: a share of the requests that name a route or model are scored by a candidate model too, after the
served answer has gone out, as sheddable work at the lowest scheduler priority (it runs only when nothing else
waits and is dropped first when the queue fills). Each shadowed request records how far the two rankings agree,
per route and arm, and optionally both rankings in a JSONL log for offline analysis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from pathlib import Path

from rerankd.errors import Overloaded, RerankdError
from rerankd.jobs import ScoreOptions, ranking
from rerankd.server.admin.agreement import agreement
from rerankd.server.admin.traffic import Shadow
from rerankd.server.engine import Engine, ServedModel
from rerankd.validation import CheckedPairs

logger = logging.getLogger(__name__)
SHADOW_PRIORITY = 1_000_000  # after every served request


def maybe_shadow(
    engine: Engine,
    requested: str | None,
    served: ServedModel,
    pairs: CheckedPairs,
    options: ScoreOptions,
    served_order: list[int],
) -> None:
    """Start a shadow scoring of this request when one is configured for what it named (route or model)."""
    target = requested if requested in engine.traffic.shadows else served.name
    shadow = engine.traffic.shadows.get(target)
    if shadow is None or shadow.candidate == served.name or random.random() >= shadow.fraction:
        return
    candidate = engine.models.get(shadow.candidate)
    if candidate is None:
        return
    labels = (target, served.name, candidate.name)
    work = _shadow(engine, labels, candidate, pairs, options, served_order, shadow)
    task = asyncio.get_running_loop().create_task(work, name=f"rerankd-shadow-{candidate.name}")
    engine.background.add(task)
    task.add_done_callback(engine.background.discard)


async def _shadow(
    engine: Engine,
    labels: tuple[str, str, str],
    candidate: ServedModel,
    pairs: CheckedPairs,
    options: ScoreOptions,
    served_order: list[int],
    shadow: Shadow,
) -> None:
    try:
        scores = await engine.score_pairs(candidate, pairs, options, SHADOW_PRIORITY, sheddable=True)
    except Overloaded:
        engine.metrics.shadow_requests.labels(*labels, "shed").inc()
        return
    except RerankdError as exc:
        engine.metrics.shadow_requests.labels(*labels, "failed").inc()
        logger.debug("shadow scoring with %s failed: %s", candidate.name, exc.message)
        return
    candidate_order = ranking(scores.scores)
    measures = agreement(served_order, candidate_order)
    for measure, value in measures.items():
        engine.metrics.shadow_agreement.labels(*labels, measure).observe(value)
    engine.metrics.shadow_requests.labels(*labels, "done").inc()
    if shadow.log:
        record = {"ts": time.time(), "route": labels[0], "served": labels[1], "candidate": labels[2],
                  "served_order": served_order, "candidate_order": candidate_order, **measures}  # fmt: skip
        await asyncio.to_thread(_append, Path(shadow.log), json.dumps(record))


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
