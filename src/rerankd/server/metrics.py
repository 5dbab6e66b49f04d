"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
AGREEMENT_BUCKETS = (-0.5, 0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
DWELL_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rerankd_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "rerankd_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "rerankd_queue_seconds", "time a request waited for its first batch", ["model"], registry=r,
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.batch_size = Histogram(
            "rerankd_batch_size", "rows per forward pass", ["model"], buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "rerankd_batch_tokens", "real tokens per forward pass", ["model"], buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_padded_tokens = Histogram(
            "rerankd_batch_padded_tokens", "padded tokens per forward pass", ["model"], buckets=TOKEN_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "rerankd_batch_seconds", "forward pass time", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("rerankd_queue_depth", "pairs waiting for a forward pass", ["model"], registry=r)
        self.rejections = Counter(
            "rerankd_rejections", "requests refused or timed out", ["model", "reason"], registry=r
        )
        self.dropped = Counter(
            "rerankd_dropped_items", "queued pairs dropped (client gone, timeout)", ["model"], registry=r
        )
        self.cache_hits = Counter("rerankd_cache_hits", "pairs answered from the score cache", ["model"], registry=r)
        self.cache_misses = Counter("rerankd_cache_misses", "pairs the score cache did not have", ["model"], registry=r)
        self.scored_pairs = Counter(
            "rerankd_scored_pairs", "pairs (or texts) computed by a model", ["model"], registry=r
        )

        self._add_rollout_metrics()

    def _add_rollout_metrics(self) -> None:
        """Routes, admin changes, shadow scoring and feedback (docs/rollout.md)."""
        r = self.registry
        self.route_requests = Counter(
            "rerankd_route_requests", "requests a route (A/B alias) sent to each arm", ["route", "model"], registry=r
        )
        self.route_weight = Gauge("rerankd_route_weight", "current weight of each arm", ["route", "model"], registry=r)
        self.admin_changes = Counter("rerankd_admin_changes", "traffic changes through the admin API", ["kind"],
                                     registry=r)  # fmt: skip
        self.shadow_requests = Counter(
            "rerankd_shadow_requests", "shadow scorings by outcome (done, shed, failed)",
            ["route", "model", "candidate", "outcome"], registry=r,
        )  # fmt: skip
        self.shadow_agreement = Histogram(
            "rerankd_shadow_agreement", "agreement of the candidate's ranking with the served one",
            ["route", "model", "candidate", "measure"], buckets=AGREEMENT_BUCKETS, registry=r,
        )  # fmt: skip
        self.feedback_events = Counter(
            "rerankd_feedback_events", "feedback events joined with a served ranking", ["route", "model"], registry=r
        )
        self.feedback_sum = Gauge(  # a gauge: rank lift can be negative
            "rerankd_feedback_value_sum", "sum of per-event online quality (divide by events for the mean)",
            ["route", "model", "measure"], registry=r,
        )  # fmt: skip
        self.feedback_unmatched = Counter(
            "rerankd_feedback_unmatched", "feedback for an unknown or expired response id", registry=r
        )
        self.feedback_dwell = Histogram(
            "rerankd_feedback_dwell_seconds", "reported dwell of clicked documents", ["route", "model"],
            buckets=DWELL_BUCKETS, registry=r,
        )  # fmt: skip
        self.feedback_short_clicks = Counter(
            "rerankd_feedback_short_clicks", "clicks with a dwell under RERANKD_FEEDBACK_MIN_DWELL_MS (not counted)",
            ["route", "model"], registry=r,
        )  # fmt: skip

    def set_route_weights(self, routes: dict[str, list[tuple[str, float]]]) -> None:
        self.route_weight.clear()
        for route, arms in routes.items():
            total = sum(weight for _, weight in arms) or 1.0
            for model, weight in arms:
                self.route_weight.labels(route, model).set(weight / total)

    def observer(self, model: str) -> SchedulerMetrics:
        return SchedulerMetrics(self, model)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SchedulerMetrics:
    """A :class:`~rerankd.runtime.scheduler.SchedulerObserver` that records into :class:`Metrics`."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._depth = metrics.queue_depth.labels(model)
        self._wait = metrics.queue_time.labels(model)
        self._size = metrics.batch_size.labels(model)
        self._tokens = metrics.batch_tokens.labels(model)
        self._padded = metrics.batch_padded_tokens.labels(model)
        self._seconds = metrics.batch_seconds.labels(model)
        self._dropped = metrics.dropped.labels(model)
        self._metrics = metrics
        self._model = model

    def depth(self, items: int) -> None:
        self._depth.set(items)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def batch(self, rows: int, tokens: int, padded_tokens: int, seconds: float) -> None:
        self._size.observe(rows)
        self._tokens.observe(tokens)
        self._padded.observe(padded_tokens)
        self._seconds.observe(seconds)

    def rejected(self, reason: str) -> None:
        self._metrics.rejections.labels(self._model, reason).inc()

    def dropped(self, items: int) -> None:
        if items:
            self._dropped.inc(items)
