"""`rerankd batch` and Ray (issue 15): local batch vs `Reranker.score`, Ray Data 1 vs 2 actors, Ray Serve vs plain.

    python -m benchmarks.run_batch local --workload rerank-batch --model minilm-ce --repeats 3
    python -m benchmarks.run_batch local --workload 100k --model tiny --repeats 3
    python -m benchmarks.run_batch ray --workload 100k --model tiny
    python -m benchmarks.run_batch serve16 --model minilm-ce --seconds 30 --repeats 2

- local: the same loaded model scores the workload with one ``Reranker.score`` call (pairs already in memory) and as
  a `rerankd batch` job (``open_job`` + ``run_local``: scan, read, journal, shard files, merge), interleaved. Besides
  wall time it reports the job's time outside ``score`` (the batch machinery itself) and the padded tokens of the
  job's per-step batch plans against one global plan (what splitting into steps costs the model).
- ray: the 100k job through Ray Data with 1 and 2 actors of 1 CPU each on `ray.init(num_cpus=2)` (actor start-up
  and model loading included, as a user waits for them).
- serve16: run_server16's 16 clients (1 query x 20 passages each) against `rerankd serve` and against
  `rerankd serve --ray local` (one replica with both CPUs), interleaved; the ratio of their pairs/s.

Workloads: rerank-batch = 16 queries x 100 passages of 61-205 words; 100k = 1,000 queries of 1-3 words x 100
title-like passages of 3-8 words. Models: minilm-ce (benchmarks/models.py); tiny = the tests' 2-layer, 32-wide BERT
cross-encoder (scoring is so cheap that the job's own overhead is as visible as it can be).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.models import ROOT, model_path
from benchmarks.run_server16 import clients, make_requests
from rerankd import Reranker
from rerankd.batch import JobSpec, open_job, run_local, step_rows
from rerankd.bench.workloads import passage, rerank_batch
from rerankd.hardware import cpu_description
from rerankd.runtime.planner import plan_batches

RESULTS = Path(__file__).resolve().parent / "results"


def tiny_model() -> Path:
    folder = ROOT / "tiny-bert-ce"
    if not (folder / "config.json").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny_models import build_cross_encoder

        shutil.rmtree(folder, ignore_errors=True)
        build_cross_encoder("bert", folder)
    return folder


def workload(name: str) -> list[tuple[str, str]]:
    if name == "rerank-batch":
        return rerank_batch().pairs
    rng = random.Random(15)
    queries = [passage(rng, rng.randint(1, 3)) for _ in range(1000)]
    return [(q, passage(rng, rng.randint(3, 8))) for q in queries for _ in range(100)]


def write_pairs(pairs: list[tuple[str, str]], path: Path) -> None:
    with path.open("w") as handle:
        for i, (query, document) in enumerate(pairs):
            handle.write(json.dumps({"id": i, "query": query, "document": document}) + "\n")


class TimedScorer:
    """Delegates to a Reranker, adding up the wall time spent inside ``score``."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker, self.budget, self.inside = reranker, reranker.budget, 0.0

    def count_tokens(self, query: str, documents: list[str]) -> list[int]:
        return self.reranker.count_tokens(query, documents)

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        start = time.perf_counter()
        try:
            return self.reranker.score(pairs)
        finally:
            self.inside += time.perf_counter() - start


def run_job(scorer: Any, source: Path, out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    job = open_job(JobSpec(source, out, "bench"), lambda sample: step_rows(scorer, sample))
    run_local(job, scorer)
    return time.perf_counter() - start, job.step_rows


def padded_tokens(reranker: Reranker, pairs: list[tuple[str, str]], step: int) -> tuple[int, int]:
    """Computed (padded) tokens of one global plan and of per-step plans over the same pairs."""
    lengths = [reranker.count_tokens(q, [d])[0] for q, d in pairs]

    def computed(chunk: list[int]) -> int:
        return sum(len(b) * max(chunk[i] for i in b) for b in plan_batches(chunk, reranker.budget))

    steps = sum(computed(lengths[i : i + step]) for i in range(0, len(lengths), step))
    return computed(lengths), steps


def local(args: argparse.Namespace) -> str:
    path = str(tiny_model() if args.model == "tiny" else model_path(args.model))
    pairs = workload(args.workload)
    reranker = Reranker.from_pretrained(path, device="cpu", dtype="float32")
    reranker.score(pairs[:64])  # warm-up
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "pairs.jsonl"
        write_pairs(pairs, source)
        for repeat in range(args.repeats):
            start = time.perf_counter()
            reranker.score(pairs)
            library = time.perf_counter() - start
            scorer = TimedScorer(reranker)
            job_seconds, step = run_job(scorer, source, Path(tmp) / f"out-{repeat}.jsonl")
            rows.append((library, job_seconds, job_seconds - scorer.inside))
            print(f"repeat {repeat}: library {len(pairs) / library:.1f} pairs/s, batch {len(pairs) / job_seconds:.1f}")
    global_plan, step_plans = padded_tokens(reranker, pairs, step)
    n = len(pairs)
    lib_rate = statistics.median(n / r[0] for r in rows)
    job_rate = statistics.median(n / r[1] for r in rows)
    lines = [
        f"# rerankd batch vs Reranker.score: {args.workload}, {args.model} ({n:,} pairs)",
        "",
        f"`{' '.join(sys.argv)}`",
        "",
        "| repeat | Reranker.score pairs/s | rerankd batch pairs/s | ratio | batch time outside score |",
        "|---|---|---|---|---|",
    ]
    for k, (library, job_seconds, outside) in enumerate(rows):
        ratio = library / job_seconds
        lines.append(f"| {k} | {n / library:.1f} | {n / job_seconds:.1f} | {ratio:.3f} | {outside / job_seconds:.1%} |")
    lines += [
        "",
        f"Median: library {lib_rate:.1f} pairs/s, batch {job_rate:.1f} pairs/s, ratio {job_rate / lib_rate:.3f}.",
        f"Step = {step:,} pairs (32 forward passes of the 8,192-token budget). Padded tokens of the per-step plans vs "
        f"one global plan: {step_plans:,} vs {global_plan:,} ({step_plans / global_plan - 1:+.2%}).",
    ]
    return "\n".join(lines)


def ray_scaling(args: argparse.Namespace) -> str:
    import ray

    from rerankd.distributed.batch import run_on_ray

    path = str(tiny_model() if args.model == "tiny" else model_path(args.model))
    pairs = workload(args.workload)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    results: dict[int, list[float]] = {a: [] for a in args.actors}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "pairs.jsonl"
        write_pairs(pairs, source)
        sizer = Reranker.from_pretrained(path, device="cpu", dtype="float32")
        load = {"device": "cpu", "dtype": "float32"}
        for repeat in range(args.repeats):
            for actors in args.actors:
                out = Path(tmp) / f"out-{actors}-{repeat}.jsonl"
                start = time.perf_counter()
                job = open_job(JobSpec(source, out, path, load), lambda sample: step_rows(sizer, sample))
                run_on_ray(job, actors=actors, num_cpus=1.0)
                results[actors].append(time.perf_counter() - start)
                print(f"{actors} actor(s): {len(pairs) / results[actors][-1]:.1f} pairs/s")
    ray.shutdown()
    n = len(pairs)
    base = statistics.median(n / s for s in results[args.actors[0]])
    lines = [
        f"# Ray Data: {args.workload}, {args.model} ({n:,} pairs), ray.init(num_cpus=2), 1 CPU per actor",
        "",
        f"`{' '.join(sys.argv)}`",
        "",
        "| actors | pairs/s (median) | runs | speed-up | scaling efficiency |",
        "|---|---|---|---|---|",
    ]
    for actors in args.actors:
        rate = statistics.median(n / s for s in results[actors])
        runs = ", ".join(f"{n / s:.0f}" for s in results[actors])
        lines.append(f"| {actors} | {rate:.1f} | {runs} | {rate / base:.2f}x | {rate / base / actors:.0%} |")
    return "\n".join(lines)


def start_server(path: str, port: int, on_ray: bool) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).with_name("rerankd"))
    command = [exe, "serve", "--model", f"ce={path}", "--port", str(port), "--cache", "none", "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RERANKD_RAY_NUM_CPUS": "2", "RERANKD_RAY_MAX_ONGOING_REQUESTS": "64"}
    env["RERANKD_REQUEST_TIMEOUT_S"] = "600"  # a loaded 2-core machine queues 16 x 20 pairs for longer than 60 s
    process = subprocess.Popen([*command, *(["--ray", "local"] if on_ray else [])], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def serve16(args: argparse.Namespace) -> str:
    path, requests = str(model_path(args.model)), make_requests()
    rates: dict[str, list[float]] = {"rerankd serve": [], "rerankd serve --ray": []}
    p99s: dict[str, list[float]] = {name: [] for name in rates}
    for _ in range(args.repeats):
        for name in rates:
            process = start_server(path, args.port, on_ray=name.endswith("--ray"))
            try:
                rate, latencies = asyncio.run(clients(f"http://127.0.0.1:{args.port}", requests, args.seconds))
            finally:
                stop_server(process)
            latencies.sort()
            rates[name].append(rate)
            p99s[name].append(latencies[max(0, int(len(latencies) * 0.99) - 1)])
            print(f"{name}: {rate:.1f} pairs/s")
            time.sleep(3)
    plain, ray = (statistics.median(rates[name]) for name in rates)
    lines = [
        f"# server-16 on Ray Serve vs plain rerankd serve: {args.model}, {args.seconds:.0f} s per run",
        "",
        f"`{' '.join(sys.argv)}`",
        "",
        "| server | pairs/s (median) | runs | p99 (ms, median) |",
        "|---|---|---|---|",
    ]
    for name in rates:
        runs = ", ".join(f"{r:.1f}" for r in rates[name])
        p99 = statistics.median(p99s[name]) * 1000
        lines.append(f"| {name} | {statistics.median(rates[name]):.1f} | {runs} | {p99:.0f} |")
    lines += [
        "",
        f"Ratio Ray Serve / plain: {ray / plain:.3f} (one replica with both CPUs; the Serve proxy shares them).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["local", "ray", "serve16"])
    parser.add_argument("--workload", default="rerank-batch", choices=["rerank-batch", "100k"])
    parser.add_argument("--model", default="minilm-ce")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    report = {"local": local, "ray": ray_scaling, "serve16": serve16}[args.mode](args)
    dtype = "float32" if args.mode != "serve16" else "the server default (auto; bf16 where the CPU has it)"
    report += (
        f"\n\nMachine: {cpu_description()}, {dtype}, shared with other jobs while measured (load average at the "
        f"end: {os.getloadavg()[0]:.1f}).\n"
    )
    name = (
        f"batch-{args.mode}-{args.workload}-{args.model}.md"
        if args.mode != "serve16"
        else f"serve16-ray-{args.model}.md"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
