"""Typed errors -> HTTP status and body, in exactly this one place.

Bodies: ``{"error": {"message", "type", "param", "code"}, "message", "request_id"}`` for every dialect,
except TEI-dialect requests (``/predict``, ``/rerank`` with ``texts``), which get TEI's
``{"error", "error_type"}``. Unexpected exceptions never reach a client: they become a 500 with a generic
message and the request id, and the traceback goes to the log.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rerankd.errors import (
    DeviceUnavailable,
    EmptyInput,
    InvalidInput,
    MissingDependency,
    ModelFetchFailed,
    ModelNotFound,
    NotReady,
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    RerankdError,
    UnsupportedModel,
)
from rerankd.server.schemas import DIALECT_TAGS, ErrorDetail, ErrorResponse, TEIErrorResponse, rerank_dialect

logger = logging.getLogger(__name__)


class Unauthorized(RerankdError):
    """No or wrong API key."""

    code = "unauthorized"


class ClientGone(Exception):
    """The client closed the connection before its answer was ready (not an error of the server)."""


CLIENT_CLOSED = 499  # nginx's status for "client closed the request"; only seen in logs and metrics


# (error class, status, OpenAI-style error type); the first matching class wins, so subclasses come first.
STATUS_TABLE: tuple[tuple[type[RerankdError], int, str], ...] = (
    (Unauthorized, 401, "authentication_error"),
    (PayloadTooLarge, 413, "invalid_request_error"),
    (ModelNotFound, 404, "not_found_error"),
    (Overloaded, 429, "rate_limit_error"),
    (NotReady, 503, "service_unavailable"),
    (OutOfMemory, 503, "service_unavailable"),
    (ModelFetchFailed, 503, "service_unavailable"),
    (InvalidInput, 400, "invalid_request_error"),
    (UnsupportedModel, 400, "invalid_request_error"),
    (MissingDependency, 500, "server_error"),
    (DeviceUnavailable, 500, "server_error"),
)
TEI_ERROR_TYPES = {400: "validation", 401: "validation", 404: "validation", 413: "validation", 422: "validation"}
TEI_ERROR_TYPES |= {429: "overloaded", 503: "unhealthy", 500: "backend"}


def status_of(error: RerankdError) -> tuple[int, str]:
    for kind, status, error_type in STATUS_TABLE:
        if isinstance(error, kind):
            return status, error_type
    return 500, "server_error"


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def is_tei(request: Request, body: Any = None) -> bool:
    """TEI-dialect requests get TEI's error shape: /predict, and /rerank bodies that the schema parses as TEI's
    (the same discriminator decides both, so the dialect that parses a request is the one that formats its error)."""
    if getattr(request.state, "dialect", None) == "tei":
        return True
    path = request.url.path
    return path == "/predict" or (path == "/rerank" and isinstance(body, dict) and rerank_dialect(body) == "tei")


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    error_type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
    tei_type: str | None = None,
) -> JSONResponse:
    if is_tei(request, body):
        tei_type = tei_type or TEI_ERROR_TYPES.get(status, "validation")
        content = TEIErrorResponse(error=message, error_type=tei_type).model_dump()
    else:
        detail = ErrorDetail(message=message, type=error_type, param=param, code=code)
        content = ErrorResponse(error=detail, message=message, request_id=request_id_of(request)).model_dump()
    return JSONResponse(content, status_code=status, headers=headers)


def plain_error_body(message: str, *, error_type: str, code: str, request_id: str | None) -> bytes:
    """An error body for the request middleware, which answers before any route (413) or after one failed
    unexpectedly (500)."""
    detail = ErrorDetail(message=message, type=error_type, code=code)
    return json.dumps(ErrorResponse(error=detail, message=message, request_id=request_id).model_dump()).encode()


def internal_error_body(request_id: str) -> bytes:
    """The generic 500 body: no exception text, only the request id to find the traceback in the log."""
    message = f"internal server error; request id {request_id}"
    return plain_error_body(message, error_type="server_error", code="internal_error", request_id=request_id)


async def _typed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RerankdError)
    status, error_type = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if status >= 500:
        logger.log(logging.INFO if status == 503 else logging.ERROR, "%s: %s", type(exc).__name__, exc.message)
    tei_type = "empty" if isinstance(exc, EmptyInput) else None  # TEI's own error type for empty inputs
    return error_response(
        request,
        status,
        exc.message,
        error_type=error_type,
        param=exc.param,
        code=exc.code,
        headers=headers,
        tei_type=tei_type,
    )


def _location(loc: tuple[Any, ...]) -> str:
    """``("body", "cohere", "top_n")`` -> ``top_n`` (the body prefix and /rerank's dialect tag dropped)."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"]:
        parts = parts[1:]
        if parts[:1] and parts[0] in DIALECT_TAGS:
            parts = parts[1:]
    return ".".join(parts) or "body"


def _json_position(document: Any, offset: Any) -> str:
    """``line L column C`` of a character offset into the request body."""
    if not isinstance(document, str) or not isinstance(offset, int):
        return "an unknown position"
    before = document[:offset]
    return f"line {before.count(chr(10)) + 1} column {offset - (before.rfind(chr(10)) + 1) + 1}"


def invalid_json(request: Request, reason: str) -> JSONResponse:
    message = f"the request body is not valid JSON: {reason}"
    return error_response(request, 400, message, error_type="invalid_request_error", param="body", code="invalid_json")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        first = errors[0]
        where = _json_position(exc.body, (first.get("loc") or ("body", None))[-1])
        return invalid_json(request, f"{(first.get('ctx') or {}).get('error', 'malformed')} at {where}")
    described = "; ".join(f"{_location(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:5])
    param = _location(tuple(errors[0].get("loc", ()))) if errors else None
    message = f"invalid request: {described}" if described else "invalid request body"
    return error_response(
        request, 422, message, error_type="invalid_request_error", param=param, code="invalid_request", body=exc.body
    )


# What FastAPI's generic "There was an error parsing the body" (400) was caused by, in words a user can act on.
PARSE_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (UnicodeDecodeError, "it is not UTF-8 text"),
    (RecursionError, "it is nested too deeply"),
    (ValueError, "it holds a number too long to read (over 4,300 digits)"),
)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        cause = exc.__cause__
        reason = next((why for kind, why in PARSE_FAILURES if isinstance(cause, kind)), "it cannot be parsed")
        return invalid_json(request, reason)
    message = str(exc.detail) if exc.status_code != 404 else f"no route {request.method} {request.url.path}"
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    headers = getattr(exc, "headers", None)  # e.g. 405's Allow
    return error_response(
        request, exc.status_code, message, error_type=error_type, code=f"http_{exc.status_code}", headers=headers
    )


async def _gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientGone, _gone)
    app.add_exception_handler(RerankdError, _typed)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
