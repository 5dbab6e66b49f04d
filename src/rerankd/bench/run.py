"""``rerankd bench``: one model's load time, time to first result, latency, throughput, memory, achieved
GFLOP/s against this machine's measured matmul peak, and padding waste, on a seeded workload.

Achieved GFLOP/s counts the dense work only: 2 x (non-embedding parameters) x (computed tokens, padding
included) per forward pass, plus the attention products 4 x layers x hidden x sum(seq^2), less what a
position-0-only last layer skips; it is an estimate. It is left out (n/a) for the ONNX backend and for int8,
whose arithmetic the float matmul peak does not describe.

The peak it is compared with is measured with the model's own GEMM shapes (the largest planned batch's tokens
times hidden x hidden, hidden x intermediate and intermediate x hidden, weighted as one encoder layer), in the
model's dtype, as the best of several short trials interleaved with the timed passes: on a shared machine a
noisy moment lowers one trial, not the peak. If the model still runs faster than the probe (fraction > 100%),
the report says the probe is unreliable (``peak_reliable: false``) instead of printing the fraction bare.
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
from rerankd.hardware import cpu_description
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
    peak_trials: int = 1
    peak_shapes: str = ""  # the GEMMs the peak was measured with, e.g. "1024x384 @ 384x384, ..."
    peak_reliable: bool = True  # False when the model ran faster than the measured peak
    cpu: str = ""  # the host CPU, named as every speed figure must name it (model, speed flags, CPUs)

    @property
    def peak_note(self) -> str | None:
        """Why the fraction of peak cannot be trusted, or None."""
        if self.peak_reliable:
            return None
        return "probe unreliable: the model ran faster than the measured peak (busy machine during the probe?)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Gemm = tuple[int, int, int]  # (m, k, n): an (m x k) @ (k x n) product


def matmul_peak_gflops(
    dtype: torch.dtype,
    device: torch.device,
    seconds: float = 0.3,
    sizes: Sequence[int] = (1024, 2048),
    trials: int = 3,
    shapes: Sequence[Gemm] | None = None,
) -> float:
    """Measured dense matmul throughput for ``dtype`` on ``device``: the best of ``trials`` timed loops over
    ``shapes`` (default: square matmuls of each of ``sizes``)."""
    gemms = list(shapes) if shapes else [(size, size, size) for size in sizes]
    probe = PeakProbe(gemms, dtype, device, seconds)
    for _ in range(trials):
        probe.trial()
    return probe.best


class PeakProbe:
    """Timed loops over a fixed set of GEMMs; :meth:`trial` can be called between other work (interleaving)."""

    def __init__(self, gemms: Sequence[Gemm], dtype: torch.dtype, device: torch.device, seconds: float) -> None:
        self.device, self.seconds = device, seconds
        self.pairs = [
            (torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype))
            for m, k, n in gemms
        ]
        self.flops = sum(2 * m * k * n for m, k, n in gemms)
        self.best = 0.0
        self.trials = 0
        self._round()  # warm-up

    def _round(self) -> None:
        for a, b in self.pairs:
            a @ b

    def trial(self) -> float:
        count, start = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - start < self.seconds:
            self._round()
            count += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        gflops = self.flops * count / (time.perf_counter() - start) / 1e9
        self.best, self.trials = max(self.best, gflops), self.trials + 1
        return gflops


def model_gemms(reranker: Reranker, lengths: list[int]) -> list[Gemm] | None:
    """One encoder layer's GEMMs at the largest planned batch: Q, K, V and output (hidden x hidden) and the
    feed-forward pair (hidden x intermediate, intermediate x hidden); None when the family declares no shape."""
    estimate = reranker.model.spec.capabilities.compute_shape
    shape = estimate(reranker.family) if estimate is not None else None
    if shape is None or shape.layers <= 0 or shape.hidden <= 0:
        return None
    plan = plan_batches(lengths, reranker.budget, reranker.family.limits.pad_to_multiple_of)
    tokens = max(max(lengths[i] for i in batch) * len(batch) for batch in plan)
    hidden, layers = shape.hidden, shape.layers
    # per layer: 4H^2 + 2HI weights, 9H + I biases and norms; once: a pooler or classifier dense layer (H^2 + H)
    per_layer = (shape.parameters - hidden * hidden - hidden) / layers - 4 * hidden * hidden - 9 * hidden
    intermediate = max(hidden, round(per_layer / (2 * hidden + 1)))
    return [(tokens, hidden, hidden)] * 4 + [(tokens, hidden, intermediate), (tokens, intermediate, hidden)]


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
    """Load ``model`` as ``load`` says and time ``runs`` passes over ``workload``, with a peak-probe trial
    before each pass and after the last."""
    work = WORKLOADS[workload]()
    started = time.perf_counter()
    reranker = Reranker.from_pretrained(model, load)
    load_s = time.perf_counter() - started
    first = time.perf_counter()
    reranker.rank(work.queries[0], work.documents[0][:1])
    first_result_s = load_s + time.perf_counter() - first
    reranker.rank(work.queries[0], work.documents[0])  # warm-up at full size
    lengths = _encoded_lengths(reranker, work)
    gemms = model_gemms(reranker, lengths) or [(size, size, size) for size in (1024, 2048)]
    device = torch.device(reranker.info.device)
    probe = PeakProbe(gemms, getattr(torch, reranker.info.dtype), device, seconds=0.2)
    latencies: list[float] = []
    for _ in range(runs):
        probe.trial()
        latencies += _timed_pass(reranker, work, progress)
    probe.trial()
    total = sum(latencies)
    waste, gflop = _work(reranker, lengths)
    achieved = gflop * runs / total if gflop is not None else None
    fraction = achieved / probe.best if achieved is not None else None
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
        matmul_peak_gflops=probe.best,
        peak_fraction=fraction,
        peak_trials=probe.trials,
        peak_shapes=", ".join(f"{m}x{k} @ {k}x{n}" for m, k, n in dict.fromkeys(gemms)),
        peak_reliable=fraction is None or fraction <= 1.0,
        cpu=cpu_description(),
    )


def _timed_pass(reranker: Reranker, work: Workload, progress: Progress | None) -> list[float]:
    """One pass over the workload: the latency of each query's rank call."""
    latencies = []
    for query, docs in zip(work.queries, work.documents, strict=True):
        tick = time.perf_counter()
        reranker.rank(query, docs)
        latencies.append(time.perf_counter() - tick)
        if progress is not None:
            progress(1)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
