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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from rerankd.errors import DeadlineExceeded, InvalidInput, ModelNotFound, NotReady, PayloadTooLarge
from rerankd.jobs import Budget, ScoreOptions, ScoringJob, describe_cut, primary_score
from rerankd.reranker import Reranker
from rerankd.runtime.activity import DeviceActivities
from rerankd.runtime.scheduler import Scheduler, SchedulerConfig
from rerankd.server.admin.feedback import FeedbackBook
from rerankd.server.admin.served_store import make_served_store
from rerankd.server.admin.traffic import Traffic
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
        self.activities = DeviceActivities()  # optional work on a device waits for its served work
        self.cache: ScoreCache = cache if cache is not None else NoCache()
        self.preloaded = preloaded
        names = list(preloaded) if preloaded else [name for name, _ in settings.served_models()]
        self.traffic = Traffic(settings.parsed_routes(names), settings.state_file)
        self.models: dict[str, ServedModel] = {}
        self.loading: dict[str, str] = {}  # models being added at run time -> "loading" or the failure
        self.served_rankings = make_served_store(settings.feedback_store, settings.feedback_ttl_s)
        self.feedback = FeedbackBook()
        self.background: set[asyncio.Task[None]] = set()  # shadow scorings in flight
        self.state: State = "loading"
        self.failure: str | None = None

    @property
    def routes(self) -> dict[str, list[tuple[str, float]]]:
        return self.traffic.routes

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load every model (off the event loop) and start its scheduler; failures leave the state "failed"."""
        restored = self.traffic.load()
        try:
            await self._load_models()
        except Exception:  # any load failure: the server stays up to say so on /ready and /health
            logger.exception("model loading failed")
            self.state, self.failure = "failed", "model loading failed; the server log has the details"
            return
        if restored:
            self._prune_routes()
        self.metrics.set_route_weights(self.routes)
        self.state = "ready"
        logger.info("ready: serving %s", ", ".join(self.models))

    async def _load_models(self) -> None:
        """The start-up models (less those removed through the admin API) and those added through it."""
        if self.preloaded:
            wanted: list[tuple[str, str | Reranker]] = list(self.preloaded.items())
        else:
            wanted = list(self.settings.served_models())
        wanted += list(self.traffic.added_models.items())
        for name, source in wanted:
            if name in self.traffic.removed_models:
                continue
            if isinstance(source, str):  # with the served model's own options (--model 'name=path;KEY=VALUE')
                source = await asyncio.to_thread(Reranker.from_pretrained, source, self.settings.load_options(name))
            self.serve_model(name, source)

    async def drain(self) -> None:
        """Refuse new work (503 ``shutting down``), let queued work finish for up to ``drain_timeout_s``, then
        answer whatever is left with 503. Idempotent: the stop signal starts it, the shutdown awaits it."""
        self.state = "draining"
        await asyncio.gather(*(m.scheduler.close(self.settings.drain_timeout_s) for m in self.models.values()))

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.drain()
        await self.cache.close()
        await self.served_rankings.close()

    def _prune_routes(self) -> None:
        """Arms of a restored state whose model is not served any more are dropped (and said so)."""
        for route, arms in list(self.routes.items()):
            kept = [(name, weight) for name, weight in arms if name in self.models]
            if kept != arms:
                logger.warning(
                    "route %s: dropping arms no longer served: %s", route, sorted(set(dict(arms)) - set(dict(kept)))
                )
            if kept and sum(w for _, w in kept) > 0:
                self.routes[route] = kept
            else:
                del self.routes[route]

    def serve_model(self, name: str, reranker: Reranker) -> None:
        """Start serving a loaded model under ``name`` (its own scheduler)."""
        config = SchedulerConfig(
            budget=reranker.budget,
            max_queued_items=self.settings.max_queue,
            max_queued_tokens=self.settings.max_queue_tokens,
            timeout_s=self.settings.request_timeout_s,
            retry_after_s=float(self.settings.retry_after_s),
        )
        scheduler = Scheduler(
            reranker.worker,
            config,
            observer=self.metrics.observer(name),
            name=name,
            activity=self.activities.get(reranker.info.device),
        )
        scheduler.start()
        info = reranker.info
        identity = (info.path, info.family, info.max_length, info.dtype, info.backend, info.quantize)
        # the family's load-time choices too (default cutoff layers, compression, score weights, ...): one model
        # served with two sets of options, or by replicas sharing a Redis cache, never shares score entries
        fingerprint = settings_digest(*identity, self.settings.truncation, reranker.model.options)
        self.models[name] = ServedModel(name, reranker, scheduler, fingerprint)

    # ------------------------------------------------------------------ resolution and limits
    def resolve(self, name: str | None, *, embedder: bool = False, sticky: str | None = None) -> ServedModel:
        """The model a request names: a served name, an A/B alias (a weighted draw; a pure function of ``sticky``
        when given, so one user sees one arm) or, if none, the first (the first embedding model for ``embedder``
        requests)."""
        if self.state != "ready":
            raise NotReady(self.failure or ("the server is shutting down" if self.state == "draining" else
                                             "the model is still loading; retry shortly"))  # fmt: skip
        if name is None:
            fitting = [m for m in self.models.values() if m.reranker.is_embedder] if embedder else []
            return (fitting or list(self.models.values()))[0]
        if name in self.models:
            return self.models[name]
        if name in self.routes:
            chosen = self.traffic.choose(name, sticky)
            self.metrics.route_requests.labels(name, chosen).inc()
            return self.models[chosen]
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
        sheddable: bool = False,
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
            table: list[list[float]] = (await self._run(served, job, priority, deadline, sheddable)).tolist()
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

    async def _run(
        self, served: ServedModel, job: ScoringJob, priority: int, deadline: Deadline, sheddable: bool = False
    ) -> torch.Tensor:
        """A prepared job's rows: its items go through the model's scheduler, ``job.finish`` reads them."""
        try:
            raw = await served.scheduler.submit(
                job.items, job.key, priority=priority, timeout_s=deadline.remaining(), sheddable=sheddable
            )
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
