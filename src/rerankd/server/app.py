"""``create_app(settings)``: the FastAPI application, its lifespan (background model loading, draining
shutdown), routes, error handlers and the request middleware."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rerankd.reranker import Reranker
from rerankd.server.admin.routes import admin, feedback
from rerankd.server.admin.served_store import StoreCollector
from rerankd.server.cache import CacheCollector, ScoreCache, make_cache
from rerankd.server.docs import install_docs
from rerankd.server.engine import Engine
from rerankd.server.errors import install_error_handlers
from rerankd.server.metrics import Metrics
from rerankd.server.middleware import RequestContextMiddleware
from rerankd.server.openapi import install_openapi
from rerankd.server.routes import api, ops
from rerankd.settings import Settings

DESCRIPTION = """Drop-in reranking server: point a Cohere, Jina, TEI, vLLM, Infinity or OpenAI client at it.

`relevance_score` is the model's relevance probability (sigmoid of a cross-encoder's or LLM reranker's logit;
the raw logit with `raw_scores` / `use_activation=false`, or for models whose config declares an identity
activation), or the cosine similarity of L2-normalised embeddings for bi-encoders."""


def create_app(
    settings: Settings, *, rerankers: dict[str, Reranker] | None = None, cache: ScoreCache | None = None
) -> FastAPI:
    """The server for ``settings``. ``rerankers`` serves already-loaded models under the given names instead
    of loading ``settings.models``; ``cache`` replaces the cache that ``settings.cache`` describes."""
    metrics = Metrics()
    score_cache = cache if cache is not None else cache_for(settings)
    metrics.registry.register(CacheCollector(score_cache))
    engine = Engine(settings, metrics, score_cache, preloaded=rerankers)
    metrics.registry.register(StoreCollector(engine.served_rankings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(engine.start(), name="rerankd-load-models")
        try:
            yield
        finally:
            await asyncio.gather(loading, return_exceptions=True)
            await engine.stop()
            search = getattr(app.state, "search", None)  # POST /v1/search's threads and cluster client
            if search is not None:
                search.close()

    from rerankd import __version__

    app = FastAPI(
        title="rerankd",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.started_at = time.time()
    install_error_handlers(app)
    install_openapi(app, settings, engine)
    install_docs(app)
    app.include_router(ops)
    app.include_router(api)
    app.include_router(feedback)
    app.include_router(admin)
    if settings.index or settings.first_stage != "index":  # POST /v1/search: an index and/or a cluster
        from rerankd.pipeline.http import attach_search

        attach_search(app, settings)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, settings=settings)
    return app


def cache_for(settings: Settings) -> ScoreCache:
    return make_cache(
        settings.cache,
        max_entries=settings.cache_size,
        max_bytes=settings.cache_max_bytes,
        ttl_s=settings.cache_ttl_s,
        timeout_s=settings.cache_timeout_ms / 1000,
    )
