"""One HTTP request carried from the Ray Serve router to a scoring replica, and run there through an ASGI app.

The router (:mod:`rerankd.distributed.serve`) has already authenticated the request and read its body under the
payload and time limits; what crosses the Ray call is plain, picklable data: :class:`ForwardedRequest` in,
:class:`ForwardedResponse` out. :func:`call_asgi` plays an ASGI server for one request on the replica: the body in
one message, then a ``receive`` that waits (as a connected client does) until the call is cancelled, and the
whole response collected.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

# Paths whose requests change state: a request that may have run on a replica that died is not sent again.
NOT_RETRIED_PREFIXES = ("/admin/", "/v1/feedback")
# An admin change's place in the application's admin log (set by the log, never taken from a client).
SEQUENCE_HEADER = b"x-rerankd-admin-sequence"
# Response headers the router's own middleware sets: the replica's copy is dropped, never sent twice.
_ROUTER_OWNED = {b"x-request-id"}


@dataclass(frozen=True)
class ForwardedRequest:
    method: str
    path: str
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    client: tuple[str, int] | None = None

    @property
    def retryable(self) -> bool:
        """Scoring, embedding, reading: the same request sent again gives the same answer and changes nothing."""
        return not self.path.startswith(NOT_RETRIED_PREFIXES)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @classmethod
    def from_scope(cls, scope: dict[str, Any], body: bytes, request_id: str) -> ForwardedRequest:
        """The request of ``scope`` with ``body``; its ``x-request-id`` becomes the router's ``request_id``, so
        the replica's logs and error bodies name the id the client sees."""
        own = (b"x-request-id", SEQUENCE_HEADER)
        headers = tuple((k, v) for k, v in scope.get("headers", []) if k.lower() not in own)
        client = scope.get("client")
        return cls(
            method=str(scope.get("method", "GET")),
            path=str(scope.get("path", "/")),
            query_string=bytes(scope.get("query_string", b"")),
            headers=(*headers, (b"x-request-id", request_id.encode())),
            body=body,
            client=(str(client[0]), int(client[1])) if client else None,
        )


@dataclass(frozen=True)
class ForwardedResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def messages(self) -> list[Message]:
        """The ASGI messages that send this response (the router's request id is added by its middleware)."""
        headers = [(k, v) for k, v in self.headers if k.lower() not in _ROUTER_OWNED]
        return [
            {"type": "http.response.start", "status": self.status, "headers": headers},
            {"type": "http.response.body", "body": self.body},
        ]


async def call_asgi(app: ASGIApp, request: ForwardedRequest) -> ForwardedResponse:
    """Run ``request`` through ``app`` and return its whole response."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http",
        "method": request.method,
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query_string,
        "headers": list(request.headers),
        "client": request.client,
        "server": None,
        "state": {},
    }
    delivered = False
    connected = asyncio.Event()  # never set: the caller stays connected until this call is cancelled

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await connected.wait()
        return {"type": "http.disconnect"}

    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = int(message["status"]), list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    return ForwardedResponse(status=status, headers=tuple(headers), body=b"".join(chunks))
