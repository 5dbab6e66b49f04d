"""rerankd vs peers on one workload and model, in one process, same inputs and thread count.

    python -m benchmarks.run_rerank --model minilm-ce --workload rerank-100 --runs 3

Each engine is loaded once, warmed up once, then timed ``--runs`` times in interleaved order (so drift on
a shared machine hits every engine alike). Reports pairs/s (median and min-max over runs), the ratio of
each engine to the baseline engine, and the Spearman correlation of each engine's scores with the fp32
baseline. Results are appended as markdown to benchmarks/results/<workload>-<model>.md with the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.models import model_path
from benchmarks.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"
Pairs = list[tuple[str, str]]


@dataclass
class Engine:
    name: str
    score: Callable[[Pairs], list[float]]
    times: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    # For peers in another venv: the time spent inside the worker for the last call (pipe cost excluded).
    clock: Callable[[], float] | None = None
    detail: str = ""  # what actually runs: resolved dtype, backend, quantisation recipe


def rerankd_engine(path: Path, label: str, **kwargs: object) -> Engine:
    from rerankd import Reranker

    model = Reranker.from_pretrained(str(path), device="cpu", normalize=False, **kwargs)  # type: ignore[arg-type]
    info = model.info
    detail = f"{info.backend} {info.dtype}" + (f", {info.quantize}" if info.quantize else "")
    return Engine(label, lambda pairs: [float(s) for s in model.score(pairs)], detail=detail)


def st_engine(path: Path, dtype: str = "float32", backend: str = "torch") -> Engine:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu", model_kwargs={"dtype": getattr(torch, dtype)}, backend=backend)
    label = "sentence-transformers" + ("" if dtype == "float32" else f" ({dtype})")
    return Engine(
        label,
        lambda pairs: model.predict(pairs, batch_size=32, activation_fn=torch.nn.Identity()).tolist(),
        detail=f"{backend} {dtype}",
    )


def flag_engine(path: Path) -> Engine:
    from FlagEmbedding import FlagReranker

    model = FlagReranker(str(path), use_fp16=False, devices=["cpu"], batch_size=32)
    return Engine("FlagReranker", lambda pairs: list(model.compute_score(pairs, normalize=False)), detail="torch fp32")


def export_stock_graph(path: Path, out: Path) -> None:
    """The ONNX peers' graph: rerankd's exporter on the stock model, i.e. with rerankd's own saving (the
    position-0-only last layer, families/first_token.py) switched off, so peers are not given rerankd's work."""
    from unittest import mock

    from rerankd.export import export_onnx

    with mock.patch("rerankd.families.cross_encoder.trim_last_layer", lambda model: False):
        export_onnx(str(path), out)


def calibration_pairs(path: Path, n: int = 128) -> Path:
    """Pairs for the static-int8 peers' calibration, drawn from rerank-batch (other queries and passages than
    the timed rerank-100), written once beside the model."""
    from benchmarks.workloads import rerank_batch

    target = path.with_name("calibration-rerank-batch.json")
    if not target.is_file():
        pairs = rerank_batch().pairs
        step = max(1, len(pairs) // n)
        target.write_text(json.dumps(pairs[::step][:n]), encoding="utf-8")
    return target


def peer_engine(path: Path, engine: str, label: str) -> Engine:
    from benchmarks.peers.remote import RemotePeer

    onnx = path.with_name(path.name + "-onnx")
    if "optimum" in engine and not (onnx / "model.onnx").is_file():
        export_stock_graph(path, onnx)

    calibration = calibration_pairs(path) if engine == "openvino-int8" else None
    peer = RemotePeer(engine, path, torch.get_num_threads(), calibration)
    return Engine(label, peer.score, clock=lambda: peer.last_seconds, detail=peer.detail)


ENGINES: dict[str, Callable[[Path], Engine]] = {
    "rerankd": lambda p: rerankd_engine(p, "rerankd (defaults)"),
    "rerankd-fp32": lambda p: rerankd_engine(p, "rerankd (fp32)", dtype="float32"),
    "rerankd-bf16": lambda p: rerankd_engine(p, "rerankd (bf16)", dtype="bfloat16"),
    "rerankd-onnx": lambda p: rerankd_engine(p, "rerankd (onnx fp32)", backend="onnx"),
    "rerankd-onnx-int8": lambda p: rerankd_engine(p, "rerankd (onnx int8)", backend="onnx", quantize="int8"),
    "rerankd-int8": lambda p: rerankd_engine(p, "rerankd (torch int8)", quantize="int8"),
    "st": st_engine,
    "st-bf16": lambda p: st_engine(p, dtype="bfloat16"),
    "flag": flag_engine,
    "infinity": lambda p: peer_engine(p, "infinity", "Infinity (torch)"),
    "infinity-optimum": lambda p: peer_engine(p, "infinity-optimum", "Infinity (optimum/onnx)"),
    "optimum": lambda p: peer_engine(p, "optimum", "optimum ORTModel"),
    "infinity-optimum-int8": lambda p: peer_engine(p, "infinity-optimum-int8", "Infinity (optimum/onnx int8)"),
    "optimum-int8": lambda p: peer_engine(p, "optimum-int8", "optimum ORTModel (int8)"),
    "infinity-bf16": lambda p: peer_engine(p, "infinity-bf16", "Infinity (torch bf16)"),
    "openvino": lambda p: peer_engine(p, "openvino", "OpenVINO (defaults)"),
    "openvino-fp32": lambda p: peer_engine(p, "openvino-fp32", "OpenVINO (fp32)"),
    "openvino-bf16": lambda p: peer_engine(p, "openvino-bf16", "OpenVINO (bf16)"),
    "openvino-int8": lambda p: peer_engine(p, "openvino-int8", "OpenVINO (int8)"),
    "ct2": lambda p: peer_engine(p, "ct2", "CTranslate2 (defaults)"),
    "ct2-int8": lambda p: peer_engine(p, "ct2-int8", "CTranslate2 (int8)"),
    "ct2-bf16": lambda p: peer_engine(p, "ct2-bf16", "CTranslate2 (bf16)"),
}

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_line() -> str:
    """The CPU (model name and the flags that decide each engine's best path) and the load average."""
    name, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    present = ", ".join(flag for flag in CPU_FLAGS if flag in flags) or "no AVX2"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"CPU: {name} ({present}), {os.cpu_count()} vCPU; load average at the end: {load}"


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def relative_delta(a: list[float], b: list[float]) -> float:
    """max |a - b| over the spread of the reference scores ``b`` (BENCHMARKS.md's accuracy bar: <= 1%)."""
    reference = np.asarray(b)
    spread = float(reference.max() - reference.min()) or 1.0
    return float(np.abs(np.asarray(a) - reference).max() / spread)


def measure(engines: list[Engine], pairs: Pairs, runs: int) -> None:
    for engine in engines:
        engine.scores = engine.score(pairs)  # warm-up, and the scores compared for agreement
    for run in range(runs):
        order = engines if run % 2 == 0 else engines[::-1]
        for engine in order:
            start = time.perf_counter()
            engine.score(pairs)
            elapsed = time.perf_counter() - start
            engine.times.append(engine.clock() if engine.clock is not None else elapsed)


def report(engines: list[Engine], n_pairs: int, args: argparse.Namespace, skipped: dict[str, str]) -> str:
    base = engines[0]
    base_rate = n_pairs / statistics.median(base.times)
    lines = [
        f"### {args.workload} / {args.model} - {time.strftime('%Y-%m-%d %H:%M')} - "
        f"torch threads {torch.get_num_threads()}",
        "",
        f"`python -m benchmarks.run_rerank {' '.join(sys.argv[1:])}`",
        "",
        cpu_line(),
        "",
        f"| engine | runs as | pairs/s (median) | min-max | ratio to {base.name} | Spearman vs {base.name} "
        "| max abs delta / spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine in engines:
        rates = sorted(n_pairs / t for t in engine.times)
        rate = statistics.median(rates)
        lines.append(
            f"| {engine.name} | {engine.detail} | {rate:.1f} | {rates[0]:.1f}-{rates[-1]:.1f} | "
            f"{rate / base_rate:.2f} | {spearman(engine.scores, base.scores):.4f} | "
            f"{relative_delta(engine.scores, base.scores):.4f} |"
        )
    lines.extend(f"\nskipped `{name}`: {reason}" for name, reason in skipped.items())
    return "\n".join(lines) + "\n"


def plot(engines: list[Engine], n_pairs: int, title: str, path: Path) -> None:
    """Bar chart of pairs/s per engine (median, with min-max whiskers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [sorted(n_pairs / t for t in engine.times) for engine in engines]
    medians = [statistics.median(r) for r in rates]
    errors = [
        [m - r[0] for m, r in zip(medians, rates, strict=True)],
        [r[-1] - m for m, r in zip(medians, rates, strict=True)],
    ]
    figure, axis = plt.subplots(figsize=(7, 0.6 * len(engines) + 1.5))
    axis.barh([e.name for e in engines], medians, xerr=errors, color="#4C72B0")
    for y, value in enumerate(medians):
        axis.text(value, y, f" {value:.1f}", va="center")
    axis.set_xlabel("pairs / second (median, min-max)")
    axis.set_title(title)
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load_engines(names: list[str], path: Path) -> tuple[list[Engine], dict[str, str]]:
    """The engines that can run here, and for each one that cannot, why (it is reported, not fatal)."""
    from benchmarks.peers.remote import PeerUnavailable

    engines, skipped = [], {}
    for name in names:
        try:
            engines.append(ENGINES[name](path))
        except PeerUnavailable as reason:
            skipped[name] = str(reason)
            print(f"skipping {name}: {reason}", file=sys.stderr)
    if not engines:
        raise SystemExit("no engine could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return engines, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-ce")
    parser.add_argument("--workload", default="rerank-100", choices=sorted(WORKLOADS))
    parser.add_argument("--engines", default="st,rerankd-fp32,flag", help=f"comma list from {sorted(ENGINES)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_path(args.model)
    pairs = WORKLOADS[args.workload]().pairs
    engines, skipped = load_engines(args.engines.split(","), path)
    measure(engines, pairs, args.runs)
    text = report(engines, len(pairs), args, skipped)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{args.workload}-{args.model}.md").open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    plot(engines, len(pairs), f"{args.workload} / {args.model}", RESULTS / f"{args.workload}-{args.model}.png")


if __name__ == "__main__":
    main()
