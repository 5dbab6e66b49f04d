"""Thin route handlers: parse a dialect, call the engine, present the result in that dialect.

Errors are raised as typed exceptions and turned into responses in :mod:`rerankd.server.errors`. Every
scoring handler runs its work under :func:`until_disconnected`, so a client that goes away has its
queued pairs dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Literal, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from rerankd.errors import NotReady
from rerankd.jobs import ScoreOptions, ranking
from rerankd.server import dialects as d
from rerankd.server import embedding_outputs as eo
from rerankd.server import schemas as s
from rerankd.server.admin.routes import remember
from rerankd.server.admin.shadow import maybe_shadow
from rerankd.server.auth import require_api_key
from rerankd.server.engine import Engine, PairScores
from rerankd.server.errors import ClientGone
from rerankd.server.openapi import error_responses, text_response
from rerankd.validation import CheckedPairs

T = TypeVar("T")

api = APIRouter(dependencies=[Depends(require_api_key)])
STICKY_HEADER = "x-rerankd-user"  # a caller's user or session id: one user always sees one arm of a route
RESPONSE_ID_HEADER = "x-rerankd-response-id"  # the id POST /v1/feedback takes, on every rerank and score answer
ops = APIRouter()


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def respond(body: BaseModel, model: str | None = None, response_id: str | None = None) -> Response:
    """JSON of a response model; unset optional fields (e.g. ``document``) are omitted, never null. ``model``, the
    served model (the arm, behind an A/B route), is also named in the ``x-rerankd-model`` header; ``response_id``
    (what ``POST /v1/feedback`` takes) in ``x-rerankd-response-id``, also where the dialect's body has no id."""
    headers = {"x-rerankd-model": model} if model else {}
    if response_id:
        headers[RESPONSE_ID_HEADER] = response_id
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers or None)


def served_ranking(request: Request, requested: str | None, scores: PairScores, response_id: str) -> str:
    """Remember the ranking this answer serves under ``response_id`` (for feedback) and return the id."""
    remember(engine_of(request), response_id, requested, scores)
    return response_id


async def _wait_for_disconnect(request: Request) -> None:
    """Returns when the client disconnects. A request without a receive channel (Starlette raises RuntimeError:
    e.g. a route called outside a server) cannot report one: then it waits until the work is done and cancels
    this watcher."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except RuntimeError:
        await asyncio.Event().wait()


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ClientGone (and ``work`` cancelled) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler itself was cancelled: take the work down with it
        watcher.cancel()
        task.cancel()
        raise
    watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone
    return task.result()


async def score_request(
    request: Request, model: str | None, pairs: CheckedPairs, options: ScoreOptions, priority: int = 0
) -> PairScores:
    """Score through the engine; a route's arm is drawn per request, or per ``x-rerankd-user`` (sticky). A shadow
    configured for what the request named scores it again afterwards, off the response path."""
    engine = engine_of(request)
    served = engine.resolve(model, sticky=request.headers.get(STICKY_HEADER))
    deadline = engine.deadline(getattr(request.state, "arrived", None))
    scores = await until_disconnected(request, engine.score_pairs(served, pairs, options, priority, deadline))
    maybe_shadow(engine, model, served, pairs, options, ranking(scores.scores))
    return scores


# ---------------------------------------------------------------------------------------------- rerank
@api.post(
    "/rerank",
    response_model=s.RerankResponse | s.TEIRerankResponse,
    summary="Rerank (Cohere v1, Jina, or TEI with `texts`)",
    responses=error_responses(both=True),
)
async def rerank(request: Request, body: s.AnyRerankRequest) -> Response:
    """Documents sorted by relevance to the query. A body with ``texts`` (and no ``documents``) is TEI's dialect:
    a bare-array answer (its response id, for feedback, in the ``x-rerankd-response-id`` header) and TEI's error
    bodies."""
    if isinstance(body, s.TEIRerankRequest):
        request.state.dialect = "tei"
        pairs = d.rank_pairs(body.query, body.texts, param="texts")
        scores = await score_request(request, body.model, pairs, d.tei_options(body))
        answer = d.tei_response(scores, d.ranked_order(scores, None), body.texts, body.return_text)
        return respond(answer, scores.model, served_ranking(request, body.model, scores, f"rerank-{uuid.uuid4()}"))
    return await _rerank_v1(request, body)


@api.post(
    "/v1/rerank",
    response_model=s.RerankResponse,
    summary="Rerank (Cohere v1, Jina, vLLM, Infinity)",
    responses=error_responses(),
)
async def rerank_v1(request: Request, body: s.RerankRequest) -> Response:
    """Documents sorted by relevance to the query."""
    return await _rerank_v1(request, body)


async def _rerank_v1(request: Request, body: s.RerankRequest) -> Response:
    texts = d.document_texts(body.documents, body.rank_fields)
    pairs = d.rank_pairs(body.query, texts)
    scores = await score_request(request, body.model, pairs, d.rerank_options(body), body.priority)
    order = d.ranked_order(scores, body.top_n)
    return_documents = body.return_documents is not False
    answer = d.rerank_response(scores, order, body.documents, return_documents, version="1")
    return respond(answer, scores.model, served_ranking(request, body.model, scores, answer.id))


@api.post("/v2/rerank", response_model=s.V2RerankResponse, summary="Rerank (Cohere v2)", responses=error_responses())
async def rerank_v2(request: Request, body: s.V2RerankRequest) -> Response:
    """Cohere v2: strict fields (unknown ones are a 422), documents are never returned."""
    pairs = d.rank_pairs(body.query, body.documents)
    scores = await score_request(request, body.model, pairs, d.v2_options(body), body.priority or 0)
    answer = d.v2_response(scores, d.ranked_order(scores, body.top_n), len(body.documents))
    return respond(answer, scores.model, served_ranking(request, body.model, scores, answer.id))


# ---------------------------------------------------------------------------------------------- score / predict
@api.post("/score", response_model=s.ScoreResponse, summary="Score pairs (vLLM)", responses=error_responses())
@api.post("/v1/score", response_model=s.ScoreResponse, summary="Score pairs (vLLM)", responses=error_responses())
async def score(request: Request, body: s.ScoreRequest) -> Response:
    """One score per pair: text_1/text_2 (or queries/documents, queries/items, data_1/data_2), 1:1, 1:N, N:N. The
    body's ``id`` is the response id feedback takes (its indices are the ``data`` indices)."""
    pairs = d.score_request_pairs(body)
    scores = await score_request(request, body.model, pairs, d.score_options(body), body.priority)
    answer = d.score_response(scores)
    return respond(answer, scores.model, served_ranking(request, body.model, scores, answer.id))


@api.post(
    "/predict", response_model=s.PredictResponse, summary="Score pairs (TEI)", responses=error_responses(tei=True)
)
async def predict(request: Request, body: s.PredictRequest) -> Response:
    """TEI's predict: ``{"inputs": [query, document]}`` or a batch of such pairs. The response id feedback takes is
    in the ``x-rerankd-response-id`` header (TEI's body has no id; feedback indices are the pairs' positions)."""
    request.state.dialect = "tei"
    pairs, single = d.predict_pairs(body.inputs)
    scores = await score_request(request, body.model, pairs, d.tei_options(body))
    answer = d.predict_response(scores, single)
    return respond(answer, scores.model, served_ranking(request, body.model, scores, f"predict-{uuid.uuid4()}"))


# ---------------------------------------------------------------------------------------------- embeddings
@api.post(
    "/v1/embeddings", response_model=s.EmbeddingResponse, summary="Embeddings (OpenAI)", responses=error_responses()
)
async def embeddings(request: Request, body: s.EmbeddingRequest) -> Response:
    """L2-normalised embeddings of bi-encoder models; ``encoding_format`` float or base64 (little-endian
    float32). ``outputs`` (rerankd) asks models such as bge-m3 or ColBERT for sparse and multi-vector outputs."""
    engine = engine_of(request)
    served = eo.resolve_for_outputs(engine, body, request.headers.get(STICKY_HEADER) or body.user)
    texts = d.embedding_texts(body, served.reranker.family.backend)
    deadline = engine.deadline(getattr(request.state, "arrived", None))
    asked = eo.asked_outputs(body)
    if served.reranker.is_embedder and asked == eo.DENSE:
        vectors, tokens = await until_disconnected(request, engine.embed(served, texts, deadline))
        return respond(d.embedding_response(served.name, vectors, tokens, body), served.name)
    result = await until_disconnected(request, eo.embed_text_outputs(engine, served, texts, asked, deadline))
    return respond(eo.outputs_response(served.name, result, body), served.name)


@api.get(
    "/v1/models",
    response_model=s.ModelList,
    summary="Served models (OpenAI)",
    responses=error_responses(401, 408, 413, 500, 503),
)
async def models(request: Request) -> Response:
    engine = engine_of(request)
    created = int(request.app.state.started_at)
    cards = []
    for name, served in engine.models.items():
        info = served.reranker.info
        kind: Literal["embedder", "reranker"] = "embedder" if served.reranker.is_embedder else "reranker"
        cards.append(
            s.ModelCard(id=name, created=created, kind=kind, family=info.family, max_length=info.max_length,
                        device=info.device, dtype=info.dtype, backend=info.backend, quantize=info.quantize)
        )  # fmt: skip
    for alias, targets in engine.routes.items():
        cards.append(s.ModelCard(id=alias, created=created, kind="route", routes_to=dict(targets)))
    return respond(s.ModelList(data=cards))


# ---------------------------------------------------------------------------------------------- operations
@ops.get("/health", response_model=s.Health, summary="Liveness", responses=error_responses(503))
async def health(request: Request) -> Response:
    """200 ``{"status": "ok"}`` while the process serves; 503 once model loading has failed. No model names or
    failure details: this route needs no API key (the details are in the server log and, with a key, /v1/models)."""
    if engine_of(request).state == "failed":
        raise NotReady("not ready: failed")
    return respond(s.Health(status="ok"))


@ops.get("/ready", response_model=s.Health, summary="Readiness", responses=error_responses(503))
async def ready(request: Request) -> Response:
    """200 ``{"status": "ready"}`` once every model is loaded; 503 ``not ready: loading|failed|draining``."""
    engine = engine_of(request)
    if engine.state != "ready":
        raise NotReady(f"not ready: {engine.state}")
    return respond(s.Health(status="ready"))


@ops.get(
    "/metrics",
    summary="Prometheus metrics (needs the API key with --metrics-auth)",
    response_class=Response,
    responses=text_response("Prometheus text format") | error_responses(401),
)
async def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
