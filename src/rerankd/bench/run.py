"""``rerankd bench``: one model's load time, time to first result, latency, throughput, memory, achieved
GFLOP/s against this machine's measured matmul peak, and padding waste, on a seeded workload.

Achieved GFLOP/s counts the dense work only: 2 x (non-embedding parameters) x (computed tokens, padding
included) per forward pass, plus the attention products 4 x layers x hidden x sum(seq^2), less what a
position-0-only last layer skips; it is an estimate. It is left out (n/a) for the ONNX backend and for int8,
whose arithmetic the float matmul peak does not describe.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rerankd.bench.workloads import WORKLOADS, Workload
from rerankd.builder import LoadOptions
from rerankd.families.base import CallOptions, Embedder
from rerankd.reranker import Reranker
from rerankd.runtime.planner import padding_waste, plan_batches

Progress = Callable[[int], None]


@dataclass(frozen=True)
class BenchReport:
    model: str
    family: str
    device: str
    dtype: str
    backend: str
    quantize: str | None
    workload: str
    pairs: int
    runs: int
    load_s: float
    first_result_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    throughput_pairs_s: float
    peak_rss_mb: float
    tokens_per_pair: float
    padding_waste: float
    achieved_gflops: float | None
    matmul_peak_gflops: float
    peak_fraction: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_peak_gflops(
    dtype: torch.dtype, device: torch.device, seconds: float = 0.3, sizes: Sequence[int] = (1024, 2048), trials: int = 3
) -> float:
    """Measured dense matmul throughput for ``dtype`` on ``device`` (the roofline bench numbers compare to): the
    best of ``trials`` timed loops over square matmuls of each size, so a noisy moment does not lower the peak."""
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        a @ b  # warm-up
        for _ in range(trials):
            count, start = 0, time.perf_counter()
            while count == 0 or time.perf_counter() - start < seconds:
                a @ b
                count += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def _encoded_lengths(reranker: Reranker, workload: Workload) -> list[int]:
    family = reranker.family
    lengths: list[int] = []
    for query, docs in zip(workload.queries, workload.documents, strict=True):
        if isinstance(family, Embedder):
            lengths += [len(e) for e in family.encode_texts(docs, "document")]
        else:
            lengths += [len(e) for e in family.encode_pairs(query, docs, CallOptions())]
    return lengths


def _work(reranker: Reranker, lengths: list[int]) -> tuple[float, float | None]:
    """(padding waste, GFLOP of one pass over the workload) for the reranker's batch plan."""
    plan = plan_batches(lengths, reranker.budget, reranker.family.limits.pad_to_multiple_of)
    waste = padding_waste(lengths, plan)
    estimate = reranker.model.spec.capabilities.compute_shape
    shape = estimate(reranker.family) if estimate is not None else None  # None for ONNX and int8 models
    if shape is None:
        return waste, None
    params, layers, hidden, first_only = shape.parameters, shape.layers, shape.hidden, shape.first_row_parameters
    flops = 0.0
    for batch in plan:
        width, rows = max(lengths[i] for i in batch), len(batch)
        flops += 2 * params * width * rows + 4 * layers * hidden * width * width * rows
        if first_only:  # the trimmed last layer: one query row instead of `width`
            flops -= (2 * first_only + 4 * hidden * width) * (width - 1) * rows
    return waste, flops / 1e9


def run_bench(
    model: str,
    load: LoadOptions | None = None,
    workload: str = "rerank-100",
    runs: int = 3,
    progress: Progress | None = None,
) -> BenchReport:
    """Load ``model`` as ``load`` says and time ``runs`` passes over ``workload``."""
    work = WORKLOADS[workload]()
    started = time.perf_counter()
    reranker = Reranker.from_pretrained(model, load)
    load_s = time.perf_counter() - started
    first = time.perf_counter()
    reranker.rank(work.queries[0], work.documents[0][:1])
    first_result_s = load_s + time.perf_counter() - first
    reranker.rank(work.queries[0], work.documents[0])  # warm-up at full size
    latencies: list[float] = []
    total = 0.0
    for _ in range(runs):
        for query, docs in zip(work.queries, work.documents, strict=True):
            tick = time.perf_counter()
            reranker.rank(query, docs)
            latencies.append(time.perf_counter() - tick)
            total += latencies[-1]
            if progress is not None:
                progress(1)
    lengths = _encoded_lengths(reranker, work)
    waste, gflop = _work(reranker, lengths)
    device = torch.device(reranker.info.device)
    peak = matmul_peak_gflops(getattr(torch, reranker.info.dtype), device)
    achieved = gflop * runs / total if gflop is not None else None
    return BenchReport(
        model=model,
        family=reranker.info.family,
        device=reranker.info.device,
        dtype=reranker.info.dtype,
        backend=reranker.info.backend,
        quantize=reranker.info.quantize,
        workload=workload,
        pairs=len(lengths),
        runs=runs,
        load_s=load_s,
        first_result_s=first_result_s,
        latency_p50_ms=1000 * statistics.median(latencies),
        latency_p99_ms=1000 * _percentile(latencies, 0.99),
        throughput_pairs_s=len(lengths) * runs / total,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        tokens_per_pair=sum(lengths) / len(lengths),
        padding_waste=waste,
        achieved_gflops=achieved,
        matmul_peak_gflops=peak,
        peak_fraction=achieved / peak if achieved is not None else None,
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
