"""What a request may cost before it is trusted or answered: authentication from the headers alone, a body-read
timeout, and an end-to-end deadline that covers tokenisation (raw sockets, so the body can be withheld)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest

from rerankd import Reranker
from tests.server.conftest import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(60)

QUERY = "what is the giant panda?"


def _raw_post(server: RunningServer, path: str, head: dict[str, str], body: bytes, read_timeout: float) -> bytes:
    """Send the headers and only ``body`` (less than Content-Length promises); return what the server answers."""
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=read_timeout) as conn:
        lines = [f"POST {path} HTTP/1.1", f"Host: {url.hostname}", *[f"{k}: {v}" for k, v in head.items()]]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def _status_and_body(answer: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_an_unauthenticated_request_is_refused_before_its_body_is_read(
    start_server: ServerFactory, bert: Reranker
) -> None:
    server = start_server({"tiny": bert}, api_key=("secret",))
    head = {"Content-Type": "application/json", "Content-Length": str(15_000_000)}
    answer = _raw_post(server, "/v1/rerank", head, b'{"query": "', read_timeout=5)  # 15 MB promised, 11 bytes sent
    status, body = _status_and_body(answer)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    tei = _raw_post(server, "/predict", head, b"{", read_timeout=5)
    assert _status_and_body(tei) == (401, {"error": "missing API key: send `Authorization: Bearer <key>`",
                                           "error_type": "validation"})  # fmt: skip


def test_a_body_that_trickles_in_gets_408(start_server: ServerFactory, bert: Reranker) -> None:
    server = start_server({"tiny": bert}, body_timeout_s=0.5)
    head = {"Content-Type": "application/json", "Content-Length": "100"}
    started = time.monotonic()
    answer = _raw_post(server, "/v1/rerank", head, b'{"query": "q", ', read_timeout=10)
    status, body = _status_and_body(answer)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 5  # answered at the body timeout, not when the client gives up


def test_the_deadline_covers_tokenisation(start_server: ServerFactory, bert: Reranker) -> None:
    """A request whose tokenisation alone outlasts --timeout is answered 429 (code timeout) at the deadline, and
    its preparation thread is abandoned: the model never sees it."""
    server = start_server({"tiny": bert}, request_timeout_s=0.2, max_documents=5000, max_queue=10**6,
                          max_queue_tokens=10**8)  # fmt: skip
    documents = [" ".join(f"w{i}x{j}" for j in range(400)) for i in range(2000)]
    with server.client(timeout=30) as client:
        started = time.monotonic()
        late = client.post("/v1/rerank", json={"query": QUERY, "documents": documents, "max_chunks_per_doc": 8})
        waited = time.monotonic() - started
    assert late.status_code == 429 and late.json()["error"]["code"] == "timeout"
    assert waited < 5, f"answered {waited:.1f} s after sending a request with a 0.2 s timeout"
    assert server.metric("rerankd_batch_size_count", model="tiny") == 0
