"""Shadow scoring's cost to served requests: the server-16 workload (16 clients, 1 query x 20 passages each) against
`rerankd serve` with route `main = ce:100`, without and with a 100% shadow to a second model, interleaved rounds.

    python -m benchmarks.run_shadow --model minilm-ce --seconds 30 --rounds 2

``--clients 4 --think-ms 500`` measures below saturation, where the device has idle time and shadows do run.

Reports served p50/p99 and throughput per round and the p50 ratio (goal: shadow at 100% adds <= 5%), plus how many
shadow scorings ran and how many were shed (the shadow only uses capacity no served request is waiting for).
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
from tests.server.conftest import metric_value

from benchmarks.models import model_path
from benchmarks.run_server16 import make_requests
from rerankd.hardware import cpu_description

ADMIN = {"Authorization": "Bearer bench-admin"}


async def drive(
    url: str, requests: list[tuple[str, list[str]]], seconds: float, clients: int = 16, think_s: float = 0.0
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    pairs = 0
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=32)) as client:
        stop = time.perf_counter() + seconds

        async def one(first: int) -> None:
            nonlocal pairs
            k = first
            while time.perf_counter() < stop:
                query, docs = requests[k % len(requests)]
                k += clients
                tick = time.perf_counter()
                body = {"model": "main", "query": query, "documents": docs, "return_documents": False}
                (await client.post("/v1/rerank", json=body)).raise_for_status()
                latencies.append(time.perf_counter() - tick)
                pairs += len(docs)
                if think_s:
                    await asyncio.sleep(think_s)  # below saturation: the device has idle time for shadows

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        return pairs / (time.perf_counter() - start), latencies


def start(path: str, port: int) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).with_name("rerankd"))
    command = [exe, "serve", "-m", f"ce={path}", "-m", f"cand={path}", "--route", "main=ce:100",
               "--port", str(port), "--cache", "none", "--device", "cpu", "--admin-key", "bench-admin",
               "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-ce")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8795)
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients (16: server-16)")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause after each answer (load below saturation)")
    args = parser.parse_args()
    path, requests = str(model_path(args.model)), make_requests()
    process = start(path, args.port)
    url = f"http://127.0.0.1:{args.port}"
    cpu = cpu_description()
    print(f"CPU: {cpu}; model {args.model}; {args.seconds:g} s per round; "
          f"{args.clients} clients, think {args.think_ms:g} ms")  # fmt: skip
    p50s: dict[str, list[float]] = {"off": [], "on": []}
    try:
        asyncio.run(drive(url, requests, 3))  # warm-up
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                if mode == "on":
                    body = {"candidate": "cand", "fraction": 1.0}
                    httpx.put(f"{url}/admin/shadows/main", json=body, headers=ADMIN).raise_for_status()
                else:
                    httpx.delete(f"{url}/admin/shadows/main", headers=ADMIN)
                rate, latencies = asyncio.run(drive(url, requests, args.seconds, args.clients, args.think_ms / 1000))
                latencies.sort()
                p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
                p50s[mode].append(p50)
                print(f"shadow {mode:3s}: {rate:6.1f} pairs/s, p50 {p50 * 1000:6.0f} ms, p99 {p99 * 1000:6.0f} ms")
        text = httpx.get(f"{url}/metrics").text
        done = metric_value(text, "rerankd_shadow_requests_total", outcome="done")
        shed = metric_value(text, "rerankd_shadow_requests_total", outcome="shed")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    ratio = statistics.median(p50s["on"]) / statistics.median(p50s["off"])
    print(f"served p50 with a 100% shadow / without: {ratio:.3f}; shadow scorings done {done:.0f}, shed {shed:.0f}")


if __name__ == "__main__":
    main()
