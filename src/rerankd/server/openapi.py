"""The OpenAPI schema of *this* server: FastAPI's schema, made to describe what the running server does.

- Authentication is declared only where it is enforced: on the API routes when keys are configured (and on
  ``/metrics`` with ``--metrics-auth``); without keys there is no security scheme and no 401.
- Request ``model`` fields list the names this server serves (``/v1/embeddings``: its embedding models), so a
  schema-valid request names a model that exists and can answer it.

The schema is rebuilt until every model has loaded (which models embed is known only then), then cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from rerankd.multi_output import OUTPUTS
from rerankd.server import schemas as s
from rerankd.server.embedding_outputs import dense_width, embedding_outputs
from rerankd.server.engine import Engine
from rerankd.settings import Settings

OPEN_ROUTES = ("/health", "/ready", "/metrics")


def install_openapi(app: FastAPI, settings: Settings, engine: Engine) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _describe_auth(schema, settings)
        _describe_models(schema, engine)
        _describe_limits(schema, settings)
        if engine.state == "ready":
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def schema_json() -> JSONResponse:  # an ordinary route: labelled like every other one in /metrics
        return JSONResponse(app.openapi())


def _operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, op) for path, item in schema.get("paths", {}).items() for op in item.values() if "responses" in op]


def _describe_auth(schema: dict[str, Any], settings: Settings) -> None:
    components = schema.setdefault("components", {})
    schemes = components.get("securitySchemes", {})
    for path, operation in _operations(schema):
        protected = bool(settings.api_key) and (
            path not in OPEN_ROUTES or (path == "/metrics" and settings.metrics_auth)
        )
        if protected:
            operation["security"] = [{name: []} for name in schemes] or operation.get("security", [])
        else:
            operation.pop("security", None)
            operation["responses"].pop("401", None)
    if not settings.api_key:
        components.pop("securitySchemes", None)


def _describe_models(schema: dict[str, Any], engine: Engine) -> None:
    if not engine.models:
        return
    every = [*engine.models, *engine.routes]
    embedders = [name for name, served in engine.models.items() if embedding_outputs(served.reranker)]
    embedders += [alias for alias, targets in engine.routes.items() if all(t in embedders for t, _ in targets)]
    if not embedders:  # nothing here can answer it
        schema.get("paths", {}).pop("/v1/embeddings", None)
    else:
        _describe_token_ids(schema, engine, [name for name in embedders if name in engine.models])
        _describe_outputs(schema, engine, [name for name in embedders if name in engine.models])
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        field = component.get("properties", {}).get("model")
        if not name.endswith("Request") or field is None:
            continue
        names = embedders if name == "EmbeddingRequest" else every
        component["properties"]["model"] = {
            "anyOf": [{"type": "string", "enum": names}, {"type": "null"}],
            "default": None,
            "description": "a served model or A/B alias; absent or null: the first one that can answer",
        }


def _describe_limits(schema: dict[str, Any], settings: Settings) -> None:
    """This server's own bounds on request fields."""
    for component in schema.get("components", {}).get("schemas", {}).values():
        field = component.get("properties", {}).get("max_chunks_per_doc")
        if field is not None:
            for option in field.get("anyOf", [field]):
                if option.get("type") == "integer":
                    option["maximum"] = settings.max_chunks_per_doc


def _describe_token_ids(schema: dict[str, Any], engine: Engine, embedders: list[str]) -> None:
    """Token-id inputs are ids of the embedding models' vocabularies and ``dimensions`` at most their width (the
    smallest, when several are served)."""
    vocab = min(
        engine.models[name].reranker.family.backend.get_vocab_size(with_added_tokens=True) for name in embedders
    )
    request = schema.get("components", {}).get("schemas", {}).get("EmbeddingRequest", {})
    dense = [engine.models[name].reranker for name in embedders if "dense" in embedding_outputs_of(engine, name)]
    width = min((dense_width(reranker) for reranker in dense), default=None)
    for option in request.get("properties", {}).get("dimensions", {}).get("anyOf", []):
        if option.get("type") == "integer" and width is not None:
            option["maximum"] = width  # `dimensions` may shorten the vectors, not lengthen them
    for option in request.get("properties", {}).get("input", {}).get("anyOf", []):
        items = option.get("items", {})
        for ids in (option, items):
            if ids.get("type") == "array" and ids.get("items", {}).get("type") == "integer":
                ids["items"] = {**ids["items"], "maximum": vocab - 1}


def embedding_outputs_of(engine: Engine, name: str) -> tuple[str, ...]:
    return embedding_outputs(engine.models[name].reranker)


def _describe_outputs(schema: dict[str, Any], engine: Engine, embedders: list[str]) -> None:
    """``outputs`` lists what every embedding model served here gives (a request naming any of them is answered;
    a model with more, e.g. bge-m3 beside a bi-encoder, still gives them when asked by name)."""
    common = [o for o in OUTPUTS if all(o in embedding_outputs_of(engine, name) for name in embedders)]
    request = schema.get("components", {}).get("schemas", {}).get("EmbeddingRequest", {})
    for option in request.get("properties", {}).get("outputs", {}).get("anyOf", []):
        if option.get("type") == "array":
            items: dict[str, Any] = {"type": "string", "enum": common} if common else {"not": {}}
            option["items"] = items


# ---------------------------------------------------------------------------------------------- documented errors
ERROR_DESCRIPTIONS = {
    400: "Invalid input: empty query or documents, bad field shapes, input too long with truncation off, body not JSON",
    401: "Missing or wrong API key (only when the server has keys)",
    404: "Unknown model or route",
    408: "The request body did not arrive within the body timeout",
    413: "Too many documents, a body over the byte limit, or more model inputs after chunking than the server allows",
    422: "The body does not match this route's schema",
    429: "Over capacity: the queue is full (code overloaded) or the request did not finish in time (code timeout)",
    500: "Unexpected server error (the body carries only the request id)",
    503: "Not ready: loading, failed to load, shutting down, or out of device memory",
}
API_ERRORS = (400, 401, 404, 408, 413, 422, 429, 500, 503)


def error_responses(*statuses: int, tei: bool = False, both: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, with the dialect's real error body."""
    model: Any = (s.ErrorResponse | s.TEIErrorResponse) if both else (s.TEIErrorResponse if tei else s.ErrorResponse)
    return {status: {"model": model, "description": ERROR_DESCRIPTIONS[status]} for status in statuses or API_ERRORS}


def text_response(description: str) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI 200 response with a plain-text body."""
    return {200: {"content": {"text/plain": {}}, "description": description}}
