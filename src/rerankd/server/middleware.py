"""The outermost ASGI layer: request ids, authentication, the payload limit and body-read timeout, request
metrics, access logs and 500s.

Order matters for what a request may cost before it is trusted: the API key is checked from the headers *before*
any of the body is read, and the body is read under a byte limit and a time limit. Pure ASGI (no
``BaseHTTPMiddleware``), so a client disconnect still reaches the route, which uses it to drop the request's queued
pairs. ``scope["state"]["arrived"]`` is when the request arrived: the end-to-end ``--timeout`` starts there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerankd.server.auth import bearer_token_of, key_matches
from rerankd.server.errors import internal_error_body, plain_error_body
from rerankd.server.logs import request_id_var
from rerankd.server.metrics import Metrics
from rerankd.settings import Settings

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("rerankd.access")

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = {"/health", "/ready", "/metrics"}
# Open without an API key: liveness, readiness and the API's own documentation (and /metrics unless
# --metrics-auth). Everything else, unknown paths included, needs a key when keys are configured.
OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, settings: Settings) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout_s = settings.body_timeout_s
        self.keys = settings.api_key
        self.admin_keys = settings.admin_key
        self.open_paths = OPEN_PATHS if settings.metrics_auth else OPEN_PATHS | {"/metrics"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["arrived"] = request_id, time.monotonic()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"], response["started"] = message["status"], True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            replay = None
            if await self._authorized(scope, send_with_id, request_id):
                replay = await self._buffered(scope, receive, send_with_id, request_id)
            if replay is not None:
                await self.app(scope, replay, send_with_id)
        except Exception:  # the one place unexpected errors end: log the traceback, answer generically
            logger.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not response["started"]:
                await send_json(send_with_id, 500, internal_error_body(request_id))
        finally:
            self._record(scope, response["status"], time.perf_counter() - started)
            request_id_var.reset(token)

    async def _authorized(self, scope: Scope, send: Send, request_id: str) -> bool:
        """Check the API key from the headers alone; answer 401 (nothing of the body read) when it fails."""
        path = str(scope.get("path", ""))
        admin = path.startswith("/admin/")
        if admin and not self.admin_keys:
            message = "the admin API is off; start the server with --admin-key"
            body = plain_error_body(message, error_type="not_found_error", code="admin_off", request_id=request_id)
            await send_json(send, 404, body)
            return False
        keys = self.admin_keys if admin else self.keys
        if not keys or (not admin and (path in self.open_paths or path.startswith(OPEN_PREFIXES))):
            return True
        token = bearer_token_of(_header(scope, b"authorization"))
        if token is not None and key_matches(token, keys):
            return True
        message = "missing API key: send `Authorization: Bearer <key>`" if token is None else "invalid API key"
        body = plain_error_body(message, error_type="authentication_error", code="unauthorized", request_id=request_id)
        await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")], tei=path == "/predict")
        return False

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> Receive | None:
        """Read the body under the payload and time limits and replay it to the app; None when answered (413,
        408) or gone."""
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return receive
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, request_id)
            return None
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                await self._too_slow(send, request_id)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send, request_id)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        return replay

    async def _too_slow(self, send: Send, request_id: str) -> None:
        message = f"the request body did not arrive within {self.body_timeout_s:g} s"
        body = plain_error_body(
            message, error_type="invalid_request_error", code="request_timeout", request_id=request_id
        )
        await send_json(send, 408, body, [(b"connection", b"close")])

    async def _too_large(self, send: Send, request_id: str) -> None:
        message = f"request body over the payload limit of {self.max_body_bytes} bytes"
        body = plain_error_body(
            message, error_type="invalid_request_error", code="payload_too_large", request_id=request_id
        )
        await send_json(send, 413, body)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(path, str(status)).inc()
        self.metrics.latency.labels(path).observe(seconds)
        level = logging.DEBUG if scope.get("path") in _QUIET_PATHS else logging.INFO
        access_logger.log(
            level,
            "%s %s %d %.1f ms",
            scope.get("method"),
            scope.get("path"),
            status,
            seconds * 1000,
            extra={"method": scope.get("method"), "path": scope.get("path"), "status": status,
                   "duration_ms": round(seconds * 1000, 2)},
        )  # fmt: skip


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None, *, tei: bool = False
) -> None:
    if tei:  # TEI clients read {"error", "error_type"}
        body = json.dumps({"error": json.loads(body)["message"], "error_type": "validation"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
