"""``rerankd serve --ray`` and the ``serve run`` builder: the server's FastAPI app on Ray Serve.

Each replica builds the very app ``rerankd serve`` runs (:func:`rerankd.server.create_app`, every dialect,
A/B route, the score cache and ``/metrics``) as a Ray Serve FastAPI ingress, so there is one set of routes,
never a fork. A replica loads every model of its application before it takes traffic and runs one rerankd
scheduler per model: requests routed to it share token-budgeted batches exactly as in one ``rerankd serve``
process. Ray Serve adds replicas across the cluster's CPUs/GPUs, scaling their number on ongoing requests per
replica, and replaces a replica that dies.

Several models: one application serves all the models given to it (``-m a=... -m b=...``, with ``--route``
A/B aliases between them); to give models separate replicas and resources, run one application per model, each
at its own route prefix (see ``deploy/ray/serve-config.yaml``).

``/metrics`` describes the replica that answers the scrape; Ray's own metrics (``ray_serve_*``: requests,
latencies, ongoing requests, replica counts) cover the whole application.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from rerankd.distributed.cluster import connect, require_ray
from rerankd.errors import InvalidInput
from rerankd.settings import Settings

logger = logging.getLogger(__name__)
APP_NAME = "rerankd"
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


class RerankdReplica:
    """One Serve replica: loads the application's models, then serves ``create_app``'s FastAPI app."""

    def __init__(self, settings_fields: dict[str, Any], threads: int) -> None:
        import torch
        from transformers.utils import logging as transformers_logging

        from rerankd.reranker import Reranker
        from rerankd.server import create_app

        transformers_logging.disable_progress_bar()  # the replica's own process: keep its log readable
        settings = Settings(**settings_fields)
        rerankers = {
            name: Reranker.from_pretrained(path, settings.load_options()) for name, path in settings.served_models()
        }
        if any(str(r.info.device).startswith("cpu") for r in rerankers.values()):
            torch.set_num_threads(max(1, threads))  # the replica's CPU share, not every core of the node
        self.rerankd_app = create_app(settings, rerankers=rerankers)  # not `app`: Serve's wrapper owns that name

    def __serve_build_asgi_app__(self) -> Any:
        return self.rerankd_app


def build_app(settings: Settings, scaling: ServeScaling | None = None) -> Any:
    """The Ray Serve application (``serve.run`` it) for ``settings``: one deployment, one FastAPI ingress."""
    require_ray()
    from ray import serve

    scaling = scaling or ServeScaling()
    settings.parsed_routes()  # a bad --model / --route fails here, not in every replica
    ingress = serve.ingress()(RerankdReplica)
    deployment = serve.deployment(name=APP_NAME, **scaling.deployment_options())(ingress)
    return deployment.bind(settings.model_dump(mode="json"), int(max(1.0, scaling.num_cpus)))


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
    ray = connect(address)
    from ray import serve

    scaling = scaling or ServeScaling.from_env()
    logger.info("Ray Serve on %s:%d, scaling %s", settings.host, settings.port, asdict(scaling))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    try:
        serve.run(build_app(settings, scaling), name=APP_NAME, route_prefix="/", blocking=True)
    finally:
        if address in (None, "", "local"):
            ray.shutdown()
