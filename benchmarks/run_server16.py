"""server-16: 16 concurrent HTTP clients, each sending 1 query x 20 passages repeatedly, against the library's
offline throughput on the same model and requests (issue 4's goal: server >= 90% of offline).

    python -m benchmarks.run_server16 --model minilm-ce --seconds 30

Runs the offline library first, then a real ``rerankd serve`` subprocess on 127.0.0.1 (cache off) with 16
httpx clients; prints pairs/s for both, the ratio, and the server's p50/p99 request latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.models import model_path
from rerankd.bench.workloads import rerank_batch
from rerankd.hardware import cpu_description

Request = tuple[str, list[str]]


def make_requests() -> list[Request]:
    work = rerank_batch()
    return [(work.queries[i], work.documents[i][j * 20 : (j + 1) * 20]) for i in range(16) for j in range(5)]


def offline(path: str, requests: list[Request], seconds: float, dtype: str) -> tuple[float, str]:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(path, device="cpu", dtype=dtype)
    reranker.rank(*requests[0])
    pairs, k, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        query, docs = requests[k % len(requests)]
        k += 1
        reranker.rank(query, docs)
        pairs += len(docs)
    return pairs / (time.perf_counter() - start), reranker.info.dtype


async def clients(url: str, requests: list[Request], seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    pairs = 0
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=32)) as client:
        await client.post("/rerank", json={"query": requests[0][0], "documents": requests[0][1]})
        stop = time.perf_counter() + seconds

        async def one(first: int) -> None:
            nonlocal pairs
            k = first
            while time.perf_counter() < stop:
                query, docs = requests[k % len(requests)]
                k += 16
                tick = time.perf_counter()
                body = {"query": query, "documents": docs, "return_documents": False}
                response = await client.post("/rerank", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - tick)
                pairs += len(docs)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(16)))
        return pairs / (time.perf_counter() - start), latencies


def served(path: str, requests: list[Request], seconds: float, port: int, dtype: str) -> tuple[float, list[float]]:
    exe = str(Path(sys.executable).with_name("rerankd"))
    command = [exe, "serve", "--model", f"ce={path}", "--port", str(port), "--cache", "none", "--device", "cpu"]
    command += ["--dtype", dtype]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return asyncio.run(clients(url, requests, seconds))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-ce")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--dtype", default="auto", help="both sides load with this dtype (auto: the guard decides)")
    args = parser.parse_args()
    path, requests = str(model_path(args.model)), make_requests()
    library, resolved = offline(path, requests, args.seconds, args.dtype)
    # the server resolves "auto" the same way (same weights, machine and guard cache): pass what the library got
    rate, latencies = served(path, requests, args.seconds, args.port, resolved)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.1f}; "
          f"dtype {args.dtype} -> {resolved} on both sides")  # fmt: skip
    print(f"offline library: {library:.1f} pairs/s")
    print(f"server (16 clients): {rate:.1f} pairs/s, ratio {rate / library:.2f}")
    p50 = statistics.median(latencies)
    print(f"request latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, n={len(latencies)}")


if __name__ == "__main__":
    main()
