"""The admin API (``/admin/*``, its own keys: ``--admin-key``; off without one) and ``POST /v1/feedback``."""

from __future__ import annotations

import time
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from rerankd.errors import InvalidInput, ModelNotFound
from rerankd.jobs import ranking
from rerankd.server.admin import control
from rerankd.server.admin import schemas as a
from rerankd.server.admin.feedback import Outcome, Served, outcome, satisfied_clicks
from rerankd.server.admin.traffic import Shadow
from rerankd.server.auth import require_api_key
from rerankd.server.engine import Engine, PairScores
from rerankd.server.openapi import error_responses

admin = APIRouter(prefix="/admin", include_in_schema=False)
feedback = APIRouter(dependencies=[Depends(require_api_key)])


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _state(engine: Engine) -> a.AdminState:
    saved = engine.traffic.as_dict()
    models = {name: "ready" for name in engine.models} | dict(engine.loading)
    return a.AdminState(models=models, changes=engine.traffic.changes, **saved)


@admin.get("/state")
async def state(request: Request) -> a.AdminState:
    return _state(engine_of(request))


@admin.put("/routes/{route}")
async def put_route(request: Request, route: str, body: a.WeightsIn) -> a.AdminState:
    engine = engine_of(request)
    control.set_weights(engine, route, body.weights)
    return _state(engine)


@admin.delete("/routes/{route}")
async def delete_route(request: Request, route: str) -> a.AdminState:
    engine = engine_of(request)
    control.remove_route(engine, route)
    return _state(engine)


@admin.post("/models", status_code=202)
async def post_model(request: Request, body: a.ModelIn) -> a.AdminState:
    """Loads in the background: poll ``GET /admin/state`` until the model says ready (or why it failed)."""
    engine = engine_of(request)
    control.add_model(engine, body.name, body.path)
    return _state(engine)


@admin.delete("/models/{name}")
async def delete_model(request: Request, name: str) -> a.AdminState:
    engine = engine_of(request)
    await control.remove_model(engine, name)
    return _state(engine)


@admin.put("/shadows/{target}")
async def put_shadow(request: Request, target: str, body: a.ShadowIn) -> a.AdminState:
    engine = engine_of(request)
    control.set_shadow(engine, target, Shadow(body.candidate, body.fraction, body.log))
    return _state(engine)


@admin.delete("/shadows/{target}")
async def delete_shadow(request: Request, target: str) -> a.AdminState:
    engine = engine_of(request)
    control.set_shadow(engine, target, None)
    return _state(engine)


@admin.get("/report/{route}")
async def report(request: Request, route: str, baseline: str | None = None, measure: str = "mrr") -> a.ReportOut:
    """Each arm's online quality from feedback, and every arm against ``baseline`` (default: the first arm)."""
    engine = engine_of(request)
    if measure not in ("mrr", "ndcg", "ctr", "rank_lift"):
        raise InvalidInput("measure must be mrr, ndcg, ctr or rank_lift", param="measure")
    result = engine.feedback.report(route, engine.settings.feedback_k, baseline, measure)
    arms = [a.ArmOut(arm=r.arm, events=r.events, means=r.means) for r in result.arms]
    return a.ReportOut(route=route, k=result.k, arms=arms, comparisons=[c.to_dict() for c in result.comparisons])


@feedback.post(
    "/v1/feedback", status_code=202, summary="What the user did with a served ranking", responses=error_responses()
)
async def post_feedback(request: Request, body: a.FeedbackIn) -> a.FeedbackOut:
    """Joins the event with the ranking served under ``id`` (404 when unknown or expired; 503 when a shared store
    cannot be reached) and adds its outcome to that arm's online quality."""
    engine = engine_of(request)
    served = await engine.served_rankings.get(body.id)
    if served is None:
        engine.metrics.feedback_unmatched.inc()
        raise ModelNotFound(f"no served ranking {body.id!r} (unknown, or older than the feedback window)", param="id")
    grades = {int(k): v for k, v in (body.relevance or {}).items() if _is_index(k)}
    clicked = list(dict.fromkeys(body.clicked))  # a repeated index is one click
    out_of_range = [i for i in [*clicked, *grades] if i >= len(served.order)]
    if out_of_range:
        raise InvalidInput(
            f"document index {out_of_range[0]} is outside the {len(served.order)} ranked", param="clicked"
        )
    dwell = _dwell(body, clicked, len(served.order))
    minimum = engine.settings.feedback_min_dwell_ms
    result = outcome(served, clicked, grades, engine.settings.feedback_k, dwell, minimum)
    engine.feedback.record(served, result)
    counted = set(satisfied_clicks(clicked, dwell, minimum))
    short = [index for index in clicked if index not in counted]
    _count(engine, served, result, dwell, len(short))
    return a.FeedbackOut(route=served.route, model=served.arm, short_clicks=short)


def _is_index(key: str) -> bool:
    return key.isascii() and key.isdigit()  # not "²" or "٣": str.isdigit() takes them, int() does not


def _dwell(body: a.FeedbackIn, clicked: list[int], ranked: int) -> dict[int, float]:
    """``dwell_ms`` by document index; every key must be a clicked index (dwell is time spent after a click)."""
    dwell: dict[int, float] = {}
    was_clicked = set(clicked)
    for key, value in (body.dwell_ms or {}).items():
        if not _is_index(key) or int(key) >= ranked:
            raise InvalidInput(f"dwell_ms key {key!r} is not a document index below {ranked}", param="dwell_ms")
        if int(key) not in was_clicked:
            raise InvalidInput(f"dwell_ms names document {key}, which is not in clicked", param="dwell_ms")
        dwell[int(key)] = value
    return dwell


def _count(engine: Engine, served: Served, result: Outcome, dwell: dict[int, float], short: int) -> None:
    """The event in /metrics: per arm, the event, the sum of each measure, the dwell of each click, short clicks."""
    engine.metrics.feedback_events.labels(served.route, served.arm).inc()
    if short:
        engine.metrics.feedback_short_clicks.labels(served.route, served.arm).inc(short)
    for measure, value in asdict(result).items():
        engine.metrics.feedback_sum.labels(served.route, served.arm, measure).inc(value)
    for milliseconds in dwell.values():
        engine.metrics.feedback_dwell.labels(served.route, served.arm).observe(milliseconds / 1000)


def remember(engine: Engine, response_id: str, requested: str | None, scores: PairScores) -> None:
    """Keep what was served (the whole ranking) under the response id, so feedback can be joined with it. Never
    waits: a shared store writes behind the response."""
    route = requested if requested in engine.routes else scores.model
    engine.served_rankings.remember(
        response_id, Served(route, scores.model, tuple(ranking(scores.scores)), time.time())
    )
