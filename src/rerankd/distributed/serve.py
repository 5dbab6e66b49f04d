"""``rerankd serve --ray`` and the ``serve run`` builder: the server's FastAPI app on Ray Serve.

Two deployments. The scoring replicas (deployment ``rerankd``) each build the very app ``rerankd serve`` runs
(:func:`rerankd.server.create_app`: every dialect, A/B route, the score cache and ``/metrics``), so there is one
set of routes, never a fork; a replica loads every model of its application before it takes traffic and runs one
rerankd scheduler per model, so requests routed to it share token-budgeted batches exactly as in one
``rerankd serve`` process. Ray Serve adds scoring replicas across the cluster's CPUs/GPUs, scaling their number on
ongoing requests per replica, and replaces a replica that dies.

In front of them, the HTTP ingress (deployment ``rerankd-router``, no CPU reserved) authenticates each request
and reads its body under the server's limits, then forwards it through a deployment handle. When the replica
under a request dies, the router sends the request once more to another replica (scoring is idempotent; admin
and feedback requests are not resent) and otherwise answers rerankd's JSON 503 with ``Retry-After`` — where
Ray's proxy in front of a bare ingress would answer a plain-text 500.

Several models: one application serves all the models given to it (``-m a=... -m b=...``, with ``--route``
A/B aliases between them); to give models separate replicas and resources, run one application per model, each
at its own route prefix (see ``deploy/ray/serve-config.yaml``).

Every response names the scoring replica that answered it (``x-rerankd-replica``). Admin changes reach every scoring
replica, feedback is counted in every replica's report, and credentials stay out of the deployment args that Serve
checkpoints into the cluster's state: :mod:`rerankd.distributed.app_state`.

``/metrics`` describes the scoring replica that answers the scrape; Ray's own metrics (``ray_serve_*``: requests,
latencies, ongoing requests, replica counts) cover the whole application.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from rerankd.distributed.app_state import hand_over, is_admin_change, join_as_router, new_build, split_secrets
from rerankd.distributed.cluster import connect, require_ray
from rerankd.distributed.forwarding import SEQUENCE_HEADER, ForwardedRequest, ForwardedResponse, call_asgi
from rerankd.errors import InvalidInput
from rerankd.settings import Settings

logger = logging.getLogger(__name__)
APP_NAME = "rerankd"  # the scoring deployment (and the default application name)
ROUTER_NAME = "rerankd-router"
ENV_PREFIX = "RERANKD_RAY_"


@dataclass(frozen=True)
class ServeScaling:
    """Replicas and their resources. ``rerankd serve --ray`` reads them from ``RERANKD_RAY_*`` env vars
    (e.g. ``RERANKD_RAY_MAX_REPLICAS=4``); a ``serve run`` config gives them as application args."""

    min_replicas: int = 1
    max_replicas: int = 1
    initial_replicas: int | None = None
    target_ongoing_requests: float = 16.0  # requests a replica batches together before Serve adds one
    max_ongoing_requests: int = 64  # requests the proxy sends one replica at once; the rest wait in the proxy
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    router_replicas: int = 1  # HTTP ingress replicas (no CPU reserved: they only authenticate and forward)
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeScaling:
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                kind = (
                    float
                    if spec.name in ("target_ongoing_requests", "num_cpus", "num_gpus") or "delay" in spec.name
                    else int
                )
                try:
                    given[spec.name] = kind(raw)
                except ValueError:
                    raise InvalidInput(f"{ENV_PREFIX}{spec.name.upper()}={raw!r} is not a number") from None
        return cls(**given)

    def deployment_options(self) -> dict[str, Any]:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise InvalidInput(f"replicas: need 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}), max >= 1")
        autoscaling = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }
        if self.initial_replicas is not None:
            autoscaling["initial_replicas"] = self.initial_replicas
        return {
            "autoscaling_config": autoscaling,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }

    def router_options(self) -> dict[str, Any]:
        if self.router_replicas < 1:
            raise InvalidInput(f"router replicas: need >= 1, got {self.router_replicas}")
        ongoing = max(1024, self.max_ongoing_requests * self.max_replicas * 4)  # waiting happens at the scorers
        return {"num_replicas": self.router_replicas, "max_ongoing_requests": ongoing,
                "ray_actor_options": {"num_cpus": 0}}  # fmt: skip


class RerankdReplica:
    """One scoring replica: loads the application's models and runs ``create_app``'s FastAPI app (its lifespan,
    scheduler, cache and metrics) for the requests the router forwards to it."""

    # Ray actors may construct asynchronously: the lifespan starts on the loop that serves the requests
    async def __init__(  # type: ignore[misc]
        self, settings_fields: dict[str, Any], threads: int, state: tuple[str, int, list[str]]
    ) -> None:
        import torch
        from ray import serve
        from transformers.utils import logging as transformers_logging

        from rerankd.distributed.app_state import ReplicaSync, check_secrets, state_actor
        from rerankd.reranker import Reranker
        from rerankd.server import create_app

        transformers_logging.disable_progress_bar()  # the replica's own process: keep its log readable
        name, built_at, expected = state
        actor = state_actor(name, built_at)
        settings = Settings(**settings_fields, **check_secrets(await actor.get_secrets.remote(), expected, name))
        rerankers = {
            name: Reranker.from_pretrained(path, settings.load_options(name)) for name, path in settings.served_models()
        }
        if any(str(r.info.device).startswith("cpu") for r in rerankers.values()):
            torch.set_num_threads(max(1, threads))  # the replica's CPU share, not every core of the node
        self.rerankd_app = create_app(settings, rerankers=rerankers)
        self._lifespan: AbstractAsyncContextManager[Any] | None = self.rerankd_app.router.lifespan_context(
            self.rerankd_app
        )
        await self._lifespan.__aenter__()  # the schedulers start before the replica takes traffic
        admin_key = settings.admin_key[0] if settings.admin_key else None
        self.sync = ReplicaSync(self.rerankd_app, actor, serve.get_replica_context().replica_tag, admin_key)
        await self.sync.sync()  # the application's admin changes so far, before the first request
        self.sync.start()

    async def forward(self, request: ForwardedRequest) -> ForwardedResponse:
        sequence = request.header(SEQUENCE_HEADER)
        if sequence is not None and is_admin_change(request):  # from the application's admin log, in order
            return await self.sync.apply(request, int(sequence))
        response = await call_asgi(self.rerankd_app, request)
        return replace(response, headers=(*response.headers, (b"x-rerankd-replica", self.sync.replica.encode())))

    async def __del__(self) -> None:  # Serve's graceful shutdown: drain as `rerankd serve` does on SIGTERM
        sync = getattr(self, "sync", None)
        if sync is not None:
            sync.stop()
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            self._lifespan = None
            await lifespan.__aexit__(None, None, None)


class RerankdRouter:
    """The HTTP ingress: authenticates and reads each request under the server's limits (the same middleware as
    ``rerankd serve``), forwards it to a scoring replica through a deployment handle, and turns a replica that
    died under the request into one retry on another replica (scoring is idempotent), or else a JSON 503 with
    ``Retry-After`` — never Ray's plain 500."""

    def __init__(self, scorers: Any, settings_fields: dict[str, Any], state: tuple[str, int, list[str]]) -> None:
        from rerankd.server.metrics import Metrics
        from rerankd.server.middleware import RequestContextMiddleware

        self.scorers = scorers
        self.state, secrets = join_as_router(*state)
        settings = Settings(**settings_fields, **secrets)
        self.asgi = RequestContextMiddleware(self._forward, metrics=Metrics(), settings=settings)

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi

    async def _forward(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to start: the scorers own the models and schedulers
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        message = await receive()  # the middleware's replay: the whole body, already read under the limits
        request_id = scope["state"]["request_id"]
        request = ForwardedRequest.from_scope(scope, message.get("body", b""), request_id)
        disconnect = asyncio.ensure_future(receive())  # after the body: resolves when the client goes away
        try:
            response = await self._call_replica(request, disconnect)
        finally:
            disconnect.cancel()
        if response is None:  # the client left: nothing to send
            return
        if isinstance(response, str):
            await _unavailable(send, request, request_id, response)
            return
        for out in response.messages():
            await send(out)

    async def _call_replica(
        self, request: ForwardedRequest, disconnect: asyncio.Future[Any]
    ) -> ForwardedResponse | str | None:
        """The replica's response; None when the client disconnected; the failure's text when replicas died."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        failure = ""
        admin = is_admin_change(request)
        for attempt in range(1 + RETRIES if request.retryable else 1):
            # an admin change goes through the application's admin log, which every replica replays
            call = self.state.apply.remote(request, self.scorers) if admin else self.scorers.forward.remote(request)
            pending = asyncio.ensure_future(_resolved(call))
            done, _ = await asyncio.wait({pending, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if pending not in done:
                if not admin:  # an admin change runs to its end: the log must say what the replicas did
                    call.cancel()
                    pending.cancel()
                return None
            try:
                return pending.result()
            except (RayActorError, ActorUnavailableError) as exc:
                failure = f"{type(exc).__name__}"
                logger.warning("scoring replica lost under %s %s (attempt %d): %s",
                               request.method, request.path, attempt + 1, failure)  # fmt: skip
        return failure


# Ray Serve's controller loop and its metrics export run ten times a second by default; on a machine whose cores the
# model's threads use, that background work slows every forward pass (docs/scaling.md, "Measured here"). Once a
# second is soon enough for replica health, scaling decisions and Prometheus scrapes.
QUIET_LOCAL_RAY = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}
RETRIES = 1  # a request whose replica died is sent once more, to another replica


async def _resolved(call: Any) -> ForwardedResponse:
    result: ForwardedResponse = await call
    return result


async def _unavailable(send: Any, request: ForwardedRequest, request_id: str, failure: str) -> None:
    from rerankd.server.errors import plain_error_body
    from rerankd.server.middleware import send_json

    again = " after a retry" if request.retryable else ""
    message = f"the scoring replica serving this request stopped ({failure}){again}; retry in a moment"
    body = plain_error_body(message, error_type="service_unavailable", code="replica_lost", request_id=request_id)
    await send_json(send, 503, body, [(b"retry-after", b"1")], tei=request.path == "/predict")


def build_app(settings: Settings, scaling: ServeScaling | None = None) -> Any:
    """The Ray Serve application (``serve.run`` it): the router ingress in front of the scoring deployment."""
    require_ray()
    from ray import serve

    scaling = scaling or ServeScaling()
    settings.parsed_routes()  # a bad --model / --route fails here, not in every replica
    public, secrets = split_secrets(settings.model_dump(mode="json"))
    defaults = {name: spec.default for name, spec in Settings.model_fields.items()}
    given = {name: value for name, value in secrets.items() if getattr(settings, name) != defaults[name]}
    state_name, built_at = new_build()
    if given:  # the credentials stay out of the args Serve checkpoints (app_state's docstring)
        hand_over(state_name, built_at, given)
    scorers = serve.deployment(name=APP_NAME, **scaling.deployment_options())(RerankdReplica)
    router = serve.deployment(name=ROUTER_NAME, **scaling.router_options())(serve.ingress()(RerankdRouter))
    state = (state_name, built_at, sorted(given))  # names only: a replica refuses to start without those values
    scoring = scorers.bind(public, int(max(1.0, scaling.num_cpus)), state)
    return router.bind(scoring, public, state)


def app_builder(args: dict[str, Any]) -> Any:
    """``serve run`` / RayService entry point (``import_path: rerankd.distributed.serve:app_builder``).

    ``args`` holds :class:`~rerankd.settings.Settings` fields (``models``, ``routes``, ``device``, …; on top of
    ``RERANKD_*`` env vars) and :class:`ServeScaling` fields (``max_replicas``, ``num_gpus``, …)."""
    scaling_names = {spec.name for spec in fields(ServeScaling)}
    scaling = ServeScaling(**{k: v for k, v in args.items() if k in scaling_names})
    settings = Settings().with_overrides(**{k: v for k, v in args.items() if k not in scaling_names})
    return build_app(settings, scaling)


def serve_on_ray(settings: Settings, address: str | None = "local", scaling: ServeScaling | None = None) -> None:
    """``rerankd serve --ray``: run the app on Ray Serve at ``settings.host:port`` until interrupted."""
    local = address in (None, "", "local")
    if local:  # the Ray this command starts inherits them (unless the environment says otherwise)
        for name, value in QUIET_LOCAL_RAY.items():
            os.environ.setdefault(name, value)
    ray = connect(address)
    from ray import serve

    scaling = scaling or ServeScaling.from_env()
    logger.info("Ray Serve on %s:%d, scaling %s", settings.host, settings.port, asdict(scaling))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    try:
        serve.run(build_app(settings, scaling), name=APP_NAME, route_prefix="/", blocking=True)
    finally:
        if local:
            ray.shutdown()
