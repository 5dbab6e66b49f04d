"""``rerankd serve``: the HTTP server (see docs/api.md). Every flag has a ``RERANKD_*`` env var twin."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from rerankd.cli.app import (
    BackendOpt,
    DeterministicOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    MaxLenOpt,
    QuantizeOpt,
    RemoteOpt,
    command,
    fail,
    locate,
    make_settings,
)
from rerankd.cli.search import (
    FirstStageApiKeyOpt,
    FirstStageAuthOpt,
    FirstStageCaOpt,
    FirstStageFieldsOpt,
    FirstStageIndexOpt,
    FirstStageOpt,
    FirstStageQueryOpt,
    FirstStageTimeoutOpt,
    FirstStageUrlOpt,
    FirstStageVerifyOpt,
    first_stage_flags,
)

if TYPE_CHECKING:
    from rerankd.settings import Settings

ListOpt = list[str] | None


@command()
def serve(
    model: Annotated[
        ListOpt,
        typer.Option(
            "--model",
            "-m",
            help="Model to serve: `path`, `name=path` or `name=path;KEY=VALUE;...` (cutoff_layers, compress_ratio, "
            "compress_layers, score_weights); repeatable (env RERANKD_MODELS).",
        ),
    ] = None,
    route: Annotated[
        ListOpt, typer.Option("--route", help="A/B alias over served models, e.g. `main=a:90,b:10`; repeatable.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1; 0.0.0.0 for all).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000; 0 picks a free one).")] = None,
    api_key: Annotated[
        ListOpt,
        typer.Option("--api-key", help="Accepted Bearer key; repeatable (env RERANKD_API_KEY)."),
    ] = None,
    admin_key: Annotated[
        ListOpt, typer.Option("--admin-key", help="Key of the admin API (/admin/*); repeatable. None: no admin API.")
    ] = None,
    state_file: Annotated[
        str | None, typer.Option(help="File that keeps admin changes (routes, models, shadows) across restarts.")
    ] = None,
    allow_unauthenticated: Annotated[
        bool | None,
        typer.Option("--allow-unauthenticated", help="Serve without an API key where one is required or expected."),
    ] = None,
    metrics_auth: Annotated[
        bool | None,
        typer.Option("--metrics-auth", help="Require the API key for /metrics too (env RERANKD_METRICS_AUTH)."),
    ] = None,
    cache: Annotated[str | None, typer.Option(help="Score cache: memory, none or redis://host:port/db.")] = None,
    feedback_store: Annotated[
        str | None,
        typer.Option(help="Where served rankings wait for POST /v1/feedback: memory or redis://host:port/db."),
    ] = None,
    cache_size: Annotated[int | None, typer.Option(help="Entries of the in-memory score cache.")] = None,
    cache_max_bytes: Annotated[int | None, typer.Option(help="Bytes the in-memory score cache may hold.")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Pairs waiting per model before 429.")] = None,
    request_timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds one request may take.")] = None,
    max_documents: Annotated[int | None, typer.Option(help="Documents per request before 413.")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Request body limit in bytes before 413.")] = None,
    drain_timeout: Annotated[float | None, typer.Option(help="SIGTERM: seconds in-flight requests may finish.")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per forward pass.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Rows per forward pass.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Raw logits by default instead of normalised scores.")] = False,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    log_format: Annotated[str | None, typer.Option(help="json (default) or text.")] = None,
    index: Annotated[str | None, typer.Option("--index", help="Serve POST /v1/search over this index folder.")] = None,
    first_stage: FirstStageOpt = None,
    first_stage_url: FirstStageUrlOpt = None,
    first_stage_index: FirstStageIndexOpt = None,
    first_stage_query: FirstStageQueryOpt = None,
    first_stage_fields: FirstStageFieldsOpt = None,
    first_stage_api_key: FirstStageApiKeyOpt = None,
    first_stage_auth: FirstStageAuthOpt = None,
    first_stage_ca_certs: FirstStageCaOpt = None,
    first_stage_verify_certs: FirstStageVerifyOpt = None,
    first_stage_timeout: FirstStageTimeoutOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    family: FamilyOpt = None,
    trust_remote_code: RemoteOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    deterministic: DeterministicOpt = None,
    ray: Annotated[str | None, typer.Option(help="On Ray Serve: `local`, `auto` or an address.")] = None,
) -> None:
    """Serve rerankers over HTTP: Cohere (v1, v2), Jina, TEI, vLLM, Infinity and OpenAI embeddings dialects; with
    --index and/or --first-stage elasticsearch|opensearch, POST /v1/search too."""
    searched = first_stage_flags(first_stage, first_stage_url, first_stage_index, first_stage_query, first_stage_fields,
                                 first_stage_api_key, first_stage_auth, first_stage_ca_certs, first_stage_verify_certs,
                                 first_stage_timeout)  # fmt: skip
    settings = make_settings(
        models=model or None,
        routes=route or None,
        host=host,
        port=port,
        api_key=api_key or None,
        admin_key=admin_key or None,
        state_file=state_file,
        allow_unauthenticated=allow_unauthenticated,
        metrics_auth=metrics_auth,
        cache=cache,
        feedback_store=feedback_store,
        cache_size=cache_size,
        cache_max_bytes=cache_max_bytes,
        max_queue=max_queue,
        request_timeout_s=request_timeout,
        max_documents=max_documents,
        max_body_bytes=max_body_bytes,
        drain_timeout_s=drain_timeout,
        batch_tokens=batch_tokens,
        max_batch_size=max_batch_size,
        normalize=False if raw else None,
        log_level=log_level,
        log_format=log_format,
        index=index,
        device=device,
        dtype=dtype,
        max_length=max_length,
        family=family,
        trust_remote_code=trust_remote_code,
        backend=backend,
        quantize=quantize,
        deterministic=deterministic,
        **searched,
    )
    exposure = settings.exposure_problem()
    if exposure is not None and exposure[1]:
        fail(exposure[0])
    if ray is not None:  # the same app on Ray Serve replicas (the rerankd[ray] extra)
        from rerankd.distributed.serve import serve_on_ray

        return serve_on_ray(settings, ray)
    _check_environment(settings)
    from rerankd.cli.app import quiet_libraries
    from rerankd.server import create_app
    from rerankd.server.logs import configure_logging
    from rerankd.server.runner import run_server

    quiet_libraries()
    configure_logging(settings.log_level, settings.log_format)
    if exposure is not None:
        logging.getLogger("rerankd.server").warning(exposure[0])
    try:
        application = create_app(settings)
    except ValueError as exc:
        fail(str(exc))
    # uvicorn drains on SIGTERM, then re-raises it under the handler that was installed before it started:
    # this one, so a drained shutdown exits with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    run_server(application, settings)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal once the drain is complete (every answer sent, the cache closed): exit 0
    at once. Skipping the interpreter's own teardown (torch and the model libraries: over a second) keeps the exit
    within a second of --drain-timeout."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_environment(settings: Settings) -> None:
    """What would stop the server once its models have loaded, checked before they load: the packages its
    options need and a port someone else listens on."""
    from rerankd.cli.extras import require

    require("server", "rerankd serve")
    if settings.cache.startswith(("redis://", "rediss://", "unix://")):
        require("server", f"--cache {settings.cache}", modules=("redis",))
    if settings.feedback_store.startswith(("redis://", "rediss://", "unix://")):
        require("server", f"--feedback-store {settings.feedback_store}", modules=("redis",))
    if settings.index:
        require("search", "--index", modules=("tantivy",))
    if settings.first_stage != "index":
        require(settings.first_stage, f"--first-stage {settings.first_stage}")
    if settings.port != 0:
        _check_port(settings.host, settings.port)
    try:
        served = settings.served_models()
    except ValueError:
        return  # create_app reports it
    for _, path in served:
        locate(path)


def _check_port(host: str, port: int) -> None:
    """Bind (and release) ``host:port`` as uvicorn will (``SO_REUSEADDR``): fails only if something listens there."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                fail(f"cannot listen on {host}:{port}: {exc.strerror} (is another server running there?)", 3)
