"""The served models of one process and the dialect-free operations the routes call.

An :class:`Engine` loads the models (in the background, so ``/ready`` can say "not yet"), gives each one a
:class:`~rerankd.runtime.scheduler.Scheduler` over the model's runtime worker, resolves request model names
(served names and weighted A/B aliases), and scores checked pairs through the score cache: cached pairs are
answered at once, the others are encoded by the :class:`~rerankd.Reranker` into a job, the job's items are
submitted to the scheduler (which batches them with other requests' items), and its rows are read by the same
``finish`` step the library uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from rerankd.errors import DeadlineExceeded, InvalidInput, ModelNotFound, NotReady, PayloadTooLarge
from rerankd.jobs import Budget, ScoreOptions, ScoringJob, describe_cut, primary_score
from rerankd.reranker import Reranker
from rerankd.runtime.scheduler import Scheduler, SchedulerConfig
from rerankd.server.cache import CachedScore, NoCache, ScoreCache, score_key, settings_digest
from rerankd.server.deadlines import Deadline, in_thread
from rerankd.server.metrics import Metrics
from rerankd.settings import Settings
from rerankd.validation import CheckedPairs, CheckedTexts

logger = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed", "draining"]


@dataclass
class ServedModel:
    name: str
    reranker: Reranker
    scheduler: Scheduler
    fingerprint: str


@dataclass(frozen=True)
class PairScores:
    """Scores of a request's pairs, in request order, and what the response must report about them."""

    model: str
    rows: list[tuple[float, ...]]
    tokens: list[int]
    cut: list[int]
    chunked: bool
    limit: int
    notices: tuple[str, ...] = ()  # warnings about the request as a whole (a truncated query)

    @property
    def scores(self) -> list[float]:
        """Each pair's primary score (what responses report and rank by)."""
        return [primary_score(row) for row in self.rows]

    def warnings(self, what: str = "document") -> list[str]:
        return [*self.notices, *describe_cut(self.cut, chunked=self.chunked, limit=self.limit, what=what)]


class Engine:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        cache: ScoreCache | None = None,
        preloaded: dict[str, Reranker] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache: ScoreCache = cache if cache is not None else NoCache()
        self.preloaded = preloaded
        names = list(preloaded) if preloaded else [name for name, _ in settings.served_models()]
        self.routes = settings.parsed_routes(names)
        self.models: dict[str, ServedModel] = {}
        self.state: State = "loading"
        self.failure: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load every model (off the event loop) and start its scheduler; failures leave the state "failed"."""
        try:
            if self.preloaded:
                for name, reranker in self.preloaded.items():
                    self._serve(name, reranker)
            else:
                options = self.settings.load_options()
                for name, path in self.settings.served_models():
                    reranker = await asyncio.to_thread(Reranker.from_pretrained, path, options)
                    self._serve(name, reranker)
        except Exception:  # any load failure: the server stays up to say so on /ready and /health
            logger.exception("model loading failed")
            self.state, self.failure = "failed", "model loading failed; the server log has the details"
            return
        self.state = "ready"
        logger.info("ready: serving %s", ", ".join(self.models))

    async def drain(self) -> None:
        """Refuse new work (503 ``shutting down``), let queued work finish for up to ``drain_timeout_s``, then
        answer whatever is left with 503. Idempotent: the stop signal starts it, the shutdown awaits it."""
        self.state = "draining"
        await asyncio.gather(*(m.scheduler.close(self.settings.drain_timeout_s) for m in self.models.values()))

    async def stop(self) -> None:
        await self.drain()
        await self.cache.close()

    def _serve(self, name: str, reranker: Reranker) -> None:
        config = SchedulerConfig(
            budget=reranker.budget,
            max_queued_items=self.settings.max_queue,
            max_queued_tokens=self.settings.max_queue_tokens,
            timeout_s=self.settings.request_timeout_s,
            retry_after_s=float(self.settings.retry_after_s),
        )
        scheduler = Scheduler(reranker.worker, config, observer=self.metrics.observer(name), name=name)
        scheduler.start()
        info = reranker.info
        identity = (info.path, info.family, info.max_length, info.dtype, info.backend, info.quantize)
        fingerprint = settings_digest(*identity, self.settings.truncation)
        self.models[name] = ServedModel(name, reranker, scheduler, fingerprint)

    # ------------------------------------------------------------------ resolution and limits
    def resolve(self, name: str | None, *, embedder: bool = False) -> ServedModel:
        """The model a request names: a served name, an A/B alias (weighted draw) or, if none, the first (the first
        embedding model for ``embedder`` requests)."""
        if self.state != "ready":
            raise NotReady(self.failure or ("the server is shutting down" if self.state == "draining" else
                                             "the model is still loading; retry shortly"))  # fmt: skip
        if name is None:
            fitting = [m for m in self.models.values() if m.reranker.is_embedder] if embedder else []
            return (fitting or list(self.models.values()))[0]
        if name in self.models:
            return self.models[name]
        if name in self.routes:
            names, weights = zip(*self.routes[name], strict=True)
            return self.models[random.choices(names, weights=weights)[0]]
        served = ", ".join([*self.models, *self.routes])
        raise ModelNotFound(f"model {name!r} is not served here; served models: {served}", param="model")

    def check_count(self, n: int, what: str = "documents") -> None:
        limit = self.settings.max_documents
        if n > limit:
            raise PayloadTooLarge(f"too many {what}: {n}, the limit is {limit} per request", param=what)

    def check_options(self, options: ScoreOptions) -> None:
        limit = self.settings.max_chunks_per_doc
        if options.max_chunks_per_doc is not None and options.max_chunks_per_doc > limit:
            raise InvalidInput(
                f"max_chunks_per_doc={options.max_chunks_per_doc} is over this server's limit of {limit}",
                param="max_chunks_per_doc",
            )

    def deadline(self, arrived: float | None) -> Deadline:
        """A request's deadline: ``--timeout`` after it arrived."""
        return Deadline.starting(arrived, self.settings.request_timeout_s, float(self.settings.retry_after_s))

    # ------------------------------------------------------------------ operations
    async def score_pairs(
        self,
        served: ServedModel,
        pairs: CheckedPairs,
        options: ScoreOptions,
        priority: int = 0,
        deadline: Deadline | None = None,
    ) -> PairScores:
        """Score pairs through the cache and the scheduler within ``deadline``; rows follow ``pairs``."""
        self.check_count(len(pairs))
        self.check_options(options)
        deadline = deadline or self.deadline(None)
        reranker = served.reranker
        options = dataclasses.replace(
            options,
            normalize=reranker.normalize if options.normalize is None else options.normalize,
            truncate=reranker.truncate if options.truncate is None else options.truncate,
        )
        keys = self._cache_keys(served, pairs, options)
        cached = await self.cache.get_many(keys) if keys else [None] * len(pairs)
        found = _Found(len(pairs))
        for position, hit in enumerate(cached):
            if hit is not None:
                found.put(position, hit)
        misses = [position for position, hit in enumerate(cached) if hit is None]
        if keys:
            self.metrics.cache_hits.labels(served.name).inc(len(pairs) - len(misses))
            self.metrics.cache_misses.labels(served.name).inc(len(misses))
        notices: tuple[str, ...] = ()
        if misses:
            missing = CheckedPairs([pairs[p] for p in misses])
            job = await self._prepare(served, lambda budget: reranker.prepare_pairs(missing, options, budget), deadline)
            table: list[list[float]] = (await self._run(served, job, priority, deadline)).tolist()
            job_cut, notices = set(job.cut), job.notices
            computed = [CachedScore(tuple(table[j]), job.tokens[j], j in job_cut) for j in range(len(misses))]
            for position, value in zip(misses, computed, strict=True):
                found.put(position, value)
            if keys:
                await self.cache.set_many([(keys[p], value) for p, value in zip(misses, computed, strict=True)])
        limit = reranker.input_limit(options)
        return PairScores(served.name, found.rows, found.tokens, sorted(found.cut), options.chunked, limit, notices)

    def _cache_keys(self, served: ServedModel, pairs: CheckedPairs, options: ScoreOptions) -> list[str]:
        """The score-cache key of every pair (none without a cache)."""
        if isinstance(self.cache, NoCache):
            return []
        settings = settings_digest(served.fingerprint, options)
        return [score_key(settings, q, d) for q, d in pairs]

    async def embed(
        self, served: ServedModel, texts: CheckedTexts, deadline: Deadline | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """Embeddings of checked ``texts`` (bi-encoder models) and the tokens each used."""
        if len(texts) > self.settings.max_embedding_inputs:
            limit = self.settings.max_embedding_inputs
            raise PayloadTooLarge(f"too many inputs: {len(texts)}, the limit is {limit} per request", param="input")
        deadline = deadline or self.deadline(None)
        reranker = served.reranker
        job = await self._prepare(served, lambda budget: reranker.prepare_embed(texts, "document", budget), deadline)
        return await self._run(served, job, 0, deadline), job.tokens

    async def _prepare(
        self, served: ServedModel, work: Callable[[Budget], ScoringJob], deadline: Deadline
    ) -> ScoringJob:
        """Tokenise in a worker thread within the deadline (abandoned when it passes or the client leaves)."""
        try:
            return await in_thread(work, deadline, self.settings.max_queue)
        except DeadlineExceeded:
            self.metrics.rejections.labels(served.name, "timeout").inc()
            raise

    async def _run(self, served: ServedModel, job: ScoringJob, priority: int, deadline: Deadline) -> torch.Tensor:
        """A prepared job's rows: its items go through the model's scheduler, ``job.finish`` reads them."""
        try:
            raw = await served.scheduler.submit(job.items, job.key, priority=priority, timeout_s=deadline.remaining())
        except DeadlineExceeded:
            raise deadline.exceeded() from None
        self.metrics.scored_pairs.labels(served.name).inc(len(job.items))
        return job.finish(raw)


class _Found:
    """Rows, tokens and truncation flags of a request's pairs, filled from the cache and from the model."""

    def __init__(self, n: int) -> None:
        self.rows: list[tuple[float, ...]] = [()] * n
        self.tokens = [0] * n
        self.cut: set[int] = set()

    def put(self, position: int, value: CachedScore) -> None:
        self.rows[position], self.tokens[position] = value.row, value.tokens
        if value.cut:
            self.cut.add(position)
