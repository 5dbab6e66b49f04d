"""Soak: the in-memory score cache under a stream of distinct queries must not grow the server's memory for ever.

Starts `rerankd serve` (tiny cross-encoder, memory cache with its byte bound) as a real process, drives it with a few
client threads sending distinct queries, samples the server's RSS every ``--sample`` seconds, and reports the RSS
growth over the second half of the run (the issue's criterion: < 2% over the last 15 minutes of a 30-minute soak).

    python -m benchmarks.soak_cache --minutes 30 --out benchmarks/results/soak-cache.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tests.server.conftest import free_port
from tests.tiny_models import build_cross_encoder, corpus


def cpu_name() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(model: Path, port: int, cache_max_bytes: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("rerankd")
    command = [str(exe), "serve", "--model", f"tiny={model}", "--port", str(port), "--device", "cpu",
               "--cache", "memory", "--cache-max-bytes", str(cache_max_bytes), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not become ready")
        time.sleep(0.2)


def drive(url: str, stop: threading.Event, counter: list[int], worker: int) -> None:
    docs = corpus(seed=worker, n=20, min_words=5, max_words=30)
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            body = {"query": f"distinct query {worker}-{i}", "documents": docs, "return_documents": False}
            client.post("/v1/rerank", json=body).raise_for_status()
            counter[0] += 1
            i += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--sample", type=float, default=30)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--cache-max-bytes", type=int, default=64 << 20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = build_cross_encoder("bert", Path(tempfile.mkdtemp(prefix="soak-")))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(model, port, args.cache_max_bytes)
    stop, counter = threading.Event(), [0]
    threads = [threading.Thread(target=drive, args=(url, stop, counter, w), daemon=True) for w in range(args.clients)]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, float, int, float]] = []
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            size = next(float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith('rerankd_cache_bytes{'))  # fmt: skip
            samples.append((elapsed / 60, rss_mib(process.pid), counter[0], size / 2**20))
            print(f"{elapsed / 60:6.1f} min  RSS {samples[-1][1]:7.1f} MiB  requests {counter[0]:7d}  "
                  f"cache {samples[-1][3]:6.1f} MiB", flush=True)  # fmt: skip
            time.sleep(args.sample)
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=60)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    growth = (half[-1][1] - half[0][1]) / half[0][1] * 100
    cpu = cpu_name()
    report = (
        f"# Score-cache soak ({args.minutes:g} min, {args.clients} clients, distinct queries, 20 documents each)\n\n"
        f"CPU: {cpu}, {os.cpu_count()} cores (shared). Cache bound {args.cache_max_bytes >> 20} MiB.\n\n"
        f"RSS first sample {samples[0][1]:.1f} MiB, at half time {half[0][1]:.1f} MiB, "
        f"at the end {half[-1][1]:.1f} MiB: "
        f"**growth over the second half {growth:+.2f}%**; {samples[-1][2]} requests.\n\n"
        "| minute | RSS MiB | requests | cache MiB |\n|---|---|---|---|\n"
        + "".join(f"| {m:.1f} | {r:.1f} | {n} | {c:.1f} |\n" for m, r, n, c in samples)
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
