"""A local HTTP stand-in for Elasticsearch / OpenSearch ``_search`` (127.0.0.1, random port, optional TLS):
answers with bodies taken from each engine's documented API and records every request it receives."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Elasticsearch's documented search response (Search API reference, "Example response"), unchanged.
ES_SEARCH_RESPONSE: dict[str, Any] = {
    "took": 5,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {
        "total": {"value": 20, "relation": "eq"},
        "max_score": 1.3862942,
        "hits": [
            {
                "_index": "my-index-000001",
                "_id": "0",
                "_score": 1.3862942,
                "_source": {
                    "@timestamp": "2099-11-15T14:12:12",
                    "http": {"request": {"method": "get"}, "response": {"status_code": 200, "bytes": 1070000},
                             "version": "1.1"},
                    "source": {"ip": "127.0.0.1"},
                    "message": "GET /search HTTP/1.1 200 1070000",
                    "user": {"id": "kimchy"},
                },
            }
        ],
    },
}  # fmt: skip

# Elasticsearch's documented error for a missing index (404 index_not_found_exception).
ES_INDEX_NOT_FOUND: dict[str, Any] = {
    "error": {
        "root_cause": [{"type": "index_not_found_exception", "reason": "no such index [nope]",
                        "resource.type": "index_or_alias", "resource.id": "nope", "index_uuid": "_na_",
                        "index": "nope"}],
        "type": "index_not_found_exception",
        "reason": "no such index [nope]",
        "resource.type": "index_or_alias",
        "resource.id": "nope",
        "index_uuid": "_na_",
        "index": "nope",
    },
    "status": 404,
}  # fmt: skip

# A 503 as a cluster without a master answers it.
CLUSTER_BLOCK: dict[str, Any] = {
    "error": {"type": "cluster_block_exception", "reason": "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered"
              " / initialized];"},
    "status": 503,
}  # fmt: skip


def search_response(hits: list[tuple[str, float, dict[str, Any]]], index: str = "docs") -> dict[str, Any]:
    """The documented response shape (took, timed_out, _shards, hits.total/max_score/hits) around ``hits``."""
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(hits), "relation": "eq"},
            "max_score": max((score for _, score, _ in hits), default=None),
            "hits": [{"_index": index, "_id": i, "_score": s, "_source": src} for i, s, src in hits],
        },
    }


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeEngine:
    url: str
    flavor: str
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    body: Any = field(default_factory=lambda: ES_SEARCH_RESPONSE)
    delay_s: float = 0.0

    def answer(self, body: Any, status: int = 200, delay_s: float = 0.0) -> None:
        self.body, self.status, self.delay_s = body, status, delay_s


def _handler(engine: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            engine.requests.append(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if engine.delay_s:
                time.sleep(engine.delay_s)
            payload = json.dumps(engine.body).encode()
            self.send_response(engine.status)
            if engine.flavor == "elasticsearch":
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/vnd.elasticsearch+json;compatible-with=9")
            else:
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _reply

    return Handler


@contextmanager
def fake_engine(flavor: str, certificate: tuple[str, str] | None = None, port: int = 0) -> Iterator[FakeEngine]:
    """Run the stand-in (on ``port``, or a free one); ``certificate`` = (cert file, key file) serves HTTPS."""
    server = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    scheme = "http"
    if certificate is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    engine = FakeEngine(f"{scheme}://127.0.0.1:{server.server_address[1]}", flavor)
    server.RequestHandlerClass = _handler(engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()
