"""The figures of the server-hardening issue, measured on real processes (tiny cross-encoder, real redis-server):

1. p50 latency with Redis frozen (SIGSTOP) vs a server without a cache;
2. the server's RSS while 32 clients send 15 MB bodies without an API key;
3. model inputs computed for `{"documents": [8 x 1 MB], "max_chunks_per_doc": 100000}` (and with 64 chunks);
4. exit time after SIGTERM with --drain-timeout 3 and work still queued;
5. answer time of requests past --timeout 1, at the client and at the server (rerankd_request_seconds: from
   the request's arrival to its answer).

    python -m benchmarks.run_hardening --out benchmarks/results/server-hardening.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tests.server.conftest import free_port, metric_value, redis_server
from tests.tiny_models import build_cross_encoder, corpus, make_words

from benchmarks.soak_cache import rss_mib
from rerankd.hardware import cpu_description

QUERY = "what is the giant panda?"


def serve(model: Path, *flags: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    exe = Path(sys.executable).with_name("rerankd")
    command = [str(exe), "serve", "--model", f"tiny={model}", "--port", str(port), "--device", "cpu", *flags]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code in (200, 401):
                return url, process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=60)


def p50(url: str, n: int, tag: str) -> float:
    docs = corpus(seed=3, n=10, min_words=5, max_words=20)
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            started = time.perf_counter()
            client.post("/v1/rerank", json={"query": f"{tag} {i}", "documents": docs}).raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def frozen_redis(model: Path, n: int) -> str:
    with redis_server(Path(tempfile.mkdtemp())) as redis:
        cached_url, cached = serve(model, "--cache", redis.url)
        plain_url, plain = serve(model, "--cache", "none")
        try:
            p50(cached_url, 5, "warm"), p50(plain_url, 5, "warm")
            healthy = p50(cached_url, n, "healthy")
            redis.process.send_signal(signal.SIGSTOP)
            frozen = p50(cached_url, n, "frozen")
            none = p50(plain_url, n, "none")
            redis.process.send_signal(signal.SIGCONT)
        finally:
            stop(cached), stop(plain)
    return (f"| p50 with Redis healthy / frozen (SIGSTOP) / no cache, {n} requests of 10 documents | "
            f"{healthy:.1f} / {frozen:.1f} / {none:.1f} ms (frozen - none: {frozen - none:+.1f} ms) |\n")  # fmt: skip


def unauthenticated_bodies(model: Path) -> str:
    url, process = serve(model, "--cache", "none", "--api-key", "k")
    host, port = url.removeprefix("http://").split(":")
    before, peak, refused = rss_mib(process.pid), 0.0, []
    body = b"x" * (15 * 1024 * 1024)

    def post() -> None:
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            head = f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            conn.sendall(head)
            with contextlib.suppress(OSError):  # the server answered 401 and closed before the body was all sent
                conn.sendall(body)
            refused.append(conn.recv(64).split(b" ")[1] == b"401")

    threads = [threading.Thread(target=post) for _ in range(32)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(process.pid))
        time.sleep(0.01)
    stop(process)
    return (f"| RSS under 32 concurrent unauthenticated 15 MB POSTs | {before:.0f} -> peak {peak:.0f} MiB; "
            f"{sum(refused)}/32 answered 401 |\n")  # fmt: skip


def chunking_rows(model: Path) -> str:
    url, process = serve(model, "--cache", "none")
    rng = random.Random(7)
    words = make_words()
    docs = [" ".join(rng.choice(words) for _ in range(150_000)) for _ in range(8)]  # about 1 MB each, distinct
    rows = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for chunks in (100_000, 64):
            answer = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "max_chunks_per_doc": chunks})
            computed = metric_value(client.get("/metrics").text, "rerankd_batch_size_sum", model="tiny")
            rows.append(f"max_chunks_per_doc={chunks}: {answer.status_code}, {computed:.0f} inputs computed so far")
    stop(process)
    return f"| the 8 x 1 MB chunking request | {'; '.join(rows)} |\n"


def drain_exit(model: Path) -> str:
    url, process = serve(
        model, "--cache", "none", "--drain-timeout", "3", "--batch-tokens", "64", "--max-documents", "5000"
    )
    docs = corpus(seed=9, n=4000, min_words=60, max_words=100)  # one pass each: still running at the drain deadline
    out: dict[str, int] = {}
    thread = threading.Thread(target=lambda: out.update(status=httpx.post(
        f"{url}/v1/rerank", json={"query": QUERY, "documents": docs}, timeout=60).status_code))  # fmt: skip
    thread.start()
    time.sleep(1.0)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    exited = time.monotonic() - signalled
    thread.join()
    what = "exit after SIGTERM 1 s into a 4,000-document request, --drain-timeout 3"
    return f"| {what} | {exited:.2f} s; in-flight answer {out} |\n"


def timeout_answers(model: Path) -> str:
    url, process = serve(model, "--cache", "none", "--timeout", "1", "--max-documents", "5000", "--batch-tokens", "64")
    docs = corpus(seed=5, n=3000, min_words=40, max_words=80)  # more than a second of work on a fast CPU
    waits = []
    with httpx.Client(base_url=url, timeout=60) as client:  # the body encoded before the clock starts
        for i in range(5):
            body = json.dumps({"query": f"q {i}", "documents": docs}).encode()
            before = metric_value(client.get("/metrics").text, "rerankd_request_seconds_sum", route="/v1/rerank")
            started = time.perf_counter()
            status = client.post("/v1/rerank", content=body, headers={"content-type": "application/json"}).status_code
            waited = time.perf_counter() - started
            served = metric_value(client.get("/metrics").text, "rerankd_request_seconds_sum", route="/v1/rerank")
            waits.append((waited, served - before, status))
    stop(process)
    shown = ", ".join(f"{w:.3f} s / server {v:.3f} s ({s})" for w, v, s in waits)
    what = "answer time with --timeout 1 (3,000 documents of 40-80 words each; client / server from arrival)"
    return f"| {what} | {shown} |\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = build_cross_encoder("bert", Path(tempfile.mkdtemp(prefix="hardening-")))
    cpu = cpu_description()
    rows = [frozen_redis(model, args.requests), unauthenticated_bodies(model), chunking_rows(model),
            drain_exit(model), timeout_answers(model)]  # fmt: skip
    report = (f"# Server hardening figures\n\nCPU: {cpu} (load average at the end: {os.getloadavg()[0]:.1f}). Tiny "
              "BERT cross-encoder, real `rerankd serve` processes, real redis-server.\n\n| measure | result |\n"
              "|---|---|\n" + "".join(rows))  # fmt: skip
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
