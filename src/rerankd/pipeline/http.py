"""``POST /v1/search`` on ``rerankd serve --index DIR`` and/or ``--first-stage elasticsearch|opensearch``: first
stage over the embedded index or the search cluster, then the path the rerank routes take (the A/B arm, sticky per
``x-rerankd-user``; shadow scoring; the score cache, scheduler, chunking and truncation; the end-to-end
``--timeout``), results with both scores and per-stage timings, and a response id that ``POST /v1/feedback`` takes
(clicked indices are the results' ``index``: their first-stage positions).

Errors are rerankd's typed errors, mapped to statuses by the server's one handler: a bad filter or retriever is
400, an unknown model 404, the deadline passed 429, an index folder without a committed index (or a model still
loading) 503 ``not_ready``, a search cluster that is down 503 ``first_stage_unavailable`` (nothing is scored or
remembered; the next request tries the cluster again).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rerankd.errors import InvalidInput, Overloaded
from rerankd.jobs import ScoreOptions
from rerankd.pipeline.base import MAX_K, Candidate, Retriever
from rerankd.pipeline.first_stage import CLUSTERS, cluster_retriever
from rerankd.pipeline.pipeline import SearchHit, first_stage_hits, reranked_hits
from rerankd.pipeline.retrievers import BM25Retriever, DenseRetriever, HybridRetriever
from rerankd.pipeline.store import SearchIndex

if TYPE_CHECKING:
    from rerankd.pipeline.remote import SearchEngineRetriever
    from rerankd.server.deadlines import Deadline
    from rerankd.server.engine import PairScores
    from rerankd.settings import Settings

T = TypeVar("T")


class SearchRequest(BaseModel):
    """A search: the first stage's ``k`` candidates re-ranked by ``model``, the best ``top_n`` returned."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    k: int = Field(100, ge=1, le=MAX_K, description="first-stage candidates")
    top_n: int | None = Field(10, ge=1, le=MAX_K, description="results returned (null: all candidates)")
    retriever: Literal["bm25", "dense", "hybrid", "elasticsearch", "opensearch"] | None = Field(
        None, description="first stage (default: the server's search cluster, else bm25 over its index)"
    )
    fusion: Literal["rrf", "weighted"] = "rrf"
    filters: dict[str, Any] | None = Field(None, description='metadata filter, e.g. {"lang": "en"}')
    model: str | None = Field(None, description="served reranker (default: the first)")
    rerank: bool = Field(True, description="false: first stage only")
    return_text: bool = True
    raw_scores: bool = False
    max_chunks_per_doc: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1)


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    index: int = Field(description="position in the first stage's list (0-based): what /v1/feedback's clicked takes")
    rank: int
    score: float
    rerank_score: float | None = None
    first_stage_score: float
    first_stage_rank: int
    title: str = ""
    text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchTimings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retrieve_ms: float
    rerank_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(description="response id for POST /v1/feedback (null without reranking)")
    model: str | None
    retriever: str
    generation: int | None = Field(description="the index generation searched (null: a search cluster)")
    candidates: int
    results: list[SearchResult]
    timings: SearchTimings
    warnings: list[str] = Field(default_factory=list)


SEARCH_THREADS = 8
SEARCHES_IN_FLIGHT = 64


class SearchState:
    """The served first stages: an index folder (its retrievers; the dense encoder loads on the first dense or hybrid
    query) and/or a search cluster (``--first-stage``)."""

    def __init__(self, root: str | Path | None, cluster: SearchEngineRetriever | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.cluster = cluster
        self._index: SearchIndex | None = None
        self._dense: DenseRetriever | None = None
        self._lock = threading.Lock()
        # First stages run on threads of their own: a hung cluster ties up these, never the pool that tokenises
        # every rerank request; past SEARCHES_IN_FLIGHT unfinished searches, new ones are refused (429)
        self._pool = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="rerankd-search")
        self._in_flight = 0

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` on the search threads. A search abandoned at its deadline still counts until its thread
        is done with it, so a cluster that hangs cannot pile up unbounded work."""
        if self._in_flight >= SEARCHES_IN_FLIGHT:
            raise Overloaded(f"{self._in_flight} first-stage searches are still running (the search cluster is slow)")
        self._in_flight += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        future.add_done_callback(self._done)
        return await future

    def _done(self, _: object) -> None:
        self._in_flight -= 1

    def close(self) -> None:
        """At server shutdown: stop the search threads (searches not started are dropped) and close the cluster
        client's connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.cluster is not None:
            self.cluster.close()

    def index(self) -> SearchIndex:
        if self.root is None:
            raise InvalidInput("this server has no search index (rerankd serve --index DIR)", param="retriever")
        with self._lock:
            if self._index is None:
                self._index = SearchIndex(self.root)  # NotReady (503) until an index is committed there
            return self._index

    def first_stage(self, name: str | None, fusion: Literal["rrf", "weighted"]) -> tuple[Retriever, int | None]:
        """The retriever a request names (None: the cluster if there is one, else bm25) and the index generation
        it searches (None for a cluster)."""
        name = name or (self.cluster.name if self.cluster is not None else "bm25")
        if name in CLUSTERS:
            if self.cluster is None or self.cluster.name != name:
                raise InvalidInput(
                    f"this server has no {name} first stage (rerankd serve --first-stage {name} ...)", param="retriever"
                )
            return self.cluster, None
        index = self.index()
        return self._local(index, name, fusion), index.snapshot().generation

    def _local(self, index: SearchIndex, name: str, fusion: Literal["rrf", "weighted"]) -> Retriever:
        if name == "bm25":
            return BM25Retriever(index)
        with self._lock:
            self._dense = self._dense or DenseRetriever(index)
        if name == "dense":
            return self._dense
        return HybridRetriever(BM25Retriever(index), self._dense, fusion=fusion)


def _result(hit: SearchHit, return_text: bool) -> SearchResult:
    document = hit.document
    return SearchResult(
        id=document.id, index=hit.first_stage_rank - 1, rank=hit.rank, score=hit.score, rerank_score=hit.rerank_score,
        first_stage_score=hit.first_stage_score, first_stage_rank=hit.first_stage_rank, title=document.title,
        text=document.text if return_text else None, metadata=dict(document.metadata),
    )  # fmt: skip


async def _within(deadline: Deadline, work: Awaitable[T]) -> T:
    """``work``'s result, or the documented 429 (code ``timeout``) once the request's deadline has passed."""
    try:
        return await asyncio.wait_for(work, deadline.remaining())
    except asyncio.TimeoutError:
        raise deadline.exceeded() from None


async def _rerank(request: Request, body: SearchRequest, candidates: list[Candidate]) -> PairScores:
    """The candidates scored the way /v1/rerank scores documents (``routes.score_request``: the route's arm, sticky per
    ``x-rerankd-user``; the request's deadline; a configured shadow), in first-stage order."""
    from rerankd.server.dialects import rank_pairs
    from rerankd.server.routes import score_request

    options = ScoreOptions(
        normalize=False if body.raw_scores else None,
        max_chunks_per_doc=body.max_chunks_per_doc,
        max_tokens_per_doc=body.max_tokens_per_doc,
    )
    pairs = rank_pairs(body.query, [c.document.body for c in candidates])
    return await score_request(request, body.model, pairs, options)


def _answer(
    body: SearchRequest,
    retriever: str,
    generation: int | None,
    candidates: list[Candidate],
    scores: PairScores | None,
    timings: SearchTimings,
) -> SearchResponse:
    """The response: reranked hits (with a response id for feedback), or the first stage's when not reranked."""
    if scores is None:
        hits, model, warnings, response_id = first_stage_hits(candidates, body.top_n), None, [], None
    else:
        hits, model, warnings = reranked_hits(candidates, scores.scores, body.top_n), scores.model, scores.warnings()
        response_id = f"search-{uuid.uuid4()}"
    return SearchResponse(
        id=response_id, model=model, retriever=retriever, generation=generation, candidates=len(candidates),
        results=[_result(hit, body.return_text) for hit in hits], timings=timings, warnings=warnings,
    )  # fmt: skip


def make_router() -> APIRouter:
    from rerankd.server.auth import require_api_key
    from rerankd.server.routes import RESPONSE_ID_HEADER, engine_of, served_ranking, until_disconnected

    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.post("/v1/search", response_model=SearchResponse, summary="Search: retrieve, then rerank")
    async def search(request: Request, body: SearchRequest) -> Response:
        """First-stage candidates from the served index (bm25, dense or hybrid) or search cluster (Elasticsearch,
        OpenSearch), metadata filters applied, re-ranked by a served model (or A/B route) as /v1/rerank would; each
        result carries both scores, its id and fields; timings per stage; the response id takes feedback."""
        state: SearchState = request.app.state.search
        engine = engine_of(request)
        if body.rerank:  # not ready / unknown model: fail before retrieving (a route's arm is drawn once, below)
            engine.resolve(None if body.model in engine.routes else body.model)
        deadline = engine.deadline(getattr(request.state, "arrived", None))
        started = time.perf_counter()
        retriever, generation = await state.run(state.first_stage, body.retriever, body.fusion)
        retrieval = state.run(retriever.retrieve, body.query, body.k, body.filters)
        candidates = await until_disconnected(request, _within(deadline, retrieval))
        retrieved = time.perf_counter()
        scores = await _rerank(request, body, candidates) if body.rerank and candidates else None
        finished = time.perf_counter()
        timings = SearchTimings(
            retrieve_ms=(retrieved - started) * 1000,
            rerank_ms=(finished - retrieved) * 1000,
            total_ms=(finished - started) * 1000,
        )
        answer = _answer(body, retriever.name, generation, candidates, scores, timings)
        if scores is None or answer.id is None:
            return JSONResponse(answer.model_dump(mode="json"))
        served_ranking(request, body.model, scores, answer.id)  # the first-stage order is the rank-lift baseline
        headers = {"x-rerankd-model": scores.model, RESPONSE_ID_HEADER: answer.id}
        return JSONResponse(answer.model_dump(mode="json"), headers=headers)

    return router


def attach_search(app: FastAPI, settings: Settings) -> None:
    """Serve ``POST /v1/search`` on ``app`` (a ``create_app`` server) over ``settings.index`` and/or the search
    cluster ``settings.first_stage`` names. A bad first-stage setting raises ``InvalidInput`` here, at start-up."""
    app.state.search = SearchState(settings.index, cluster_retriever(settings))
    app.include_router(make_router())
