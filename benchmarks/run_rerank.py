"""rerankd vs peers on one workload and model, in one process, same inputs and thread count.

    python -m benchmarks.run_rerank --model minilm-ce --workload rerank-100 --runs 3

Each engine is loaded once, warmed up once, then timed ``--runs`` times in interleaved order (so drift on
a shared machine hits every engine alike). Reports pairs/s (median and min-max over runs), the ratio of
each engine to the baseline engine, and the Spearman correlation of each engine's scores with the fp32
baseline. Results are appended as markdown to benchmarks/results/<workload>-<model>.md with the command.
"""

from __future__ import annotations

import argparse
import logging
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


def rerankd_engine(path: Path, label: str, **kwargs: object) -> Engine:
    from rerankd import Reranker

    model = Reranker.from_pretrained(str(path), device="cpu", normalize=False, **kwargs)  # type: ignore[arg-type]
    return Engine(label, lambda pairs: [float(s) for s in model.score(pairs)])


def st_engine(path: Path, dtype: str = "float32", backend: str = "torch") -> Engine:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu", model_kwargs={"dtype": getattr(torch, dtype)}, backend=backend)
    label = "sentence-transformers" + ("" if dtype == "float32" else f" ({dtype})")
    return Engine(label, lambda pairs: model.predict(pairs, batch_size=32, activation_fn=torch.nn.Identity()).tolist())


def flag_engine(path: Path) -> Engine:
    from FlagEmbedding import FlagReranker

    model = FlagReranker(str(path), use_fp16=False, devices=["cpu"], batch_size=32)
    return Engine("FlagReranker", lambda pairs: list(model.compute_score(pairs, normalize=False)))


def export_stock_graph(path: Path, out: Path) -> None:
    """The ONNX peers' graph: rerankd's exporter on the stock model, i.e. with rerankd's own saving (the
    position-0-only last layer, families/first_token.py) switched off, so peers are not given rerankd's work."""
    from unittest import mock

    from rerankd.export import export_onnx

    with mock.patch("rerankd.families.cross_encoder.trim_last_layer", lambda model: False):
        export_onnx(str(path), out)


def peer_engine(path: Path, engine: str, label: str) -> Engine:
    from benchmarks.peers.remote import RemotePeer

    onnx = path.with_name(path.name + "-onnx")
    if engine != "infinity" and not (onnx / "model.onnx").is_file():
        export_stock_graph(path, onnx)

    peer = RemotePeer(engine, path, torch.get_num_threads())
    return Engine(label, peer.score, clock=lambda: peer.last_seconds)


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
}


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


def report(engines: list[Engine], n_pairs: int, args: argparse.Namespace) -> str:
    base = engines[0]
    base_rate = n_pairs / statistics.median(base.times)
    lines = [
        f"### {args.workload} / {args.model} - {time.strftime('%Y-%m-%d %H:%M')} - "
        f"torch threads {torch.get_num_threads()}",
        "",
        f"`python -m benchmarks.run_rerank {' '.join(sys.argv[1:])}`",
        "",
        f"| engine | pairs/s (median) | min-max | ratio to {base.name} | Spearman vs {base.name} "
        "| max abs delta / spread |",
        "|---|---|---|---|---|---|",
    ]
    for engine in engines:
        rates = sorted(n_pairs / t for t in engine.times)
        rate = statistics.median(rates)
        lines.append(
            f"| {engine.name} | {rate:.1f} | {rates[0]:.1f}-{rates[-1]:.1f} | {rate / base_rate:.2f} | "
            f"{spearman(engine.scores, base.scores):.4f} | {relative_delta(engine.scores, base.scores):.4f} |"
        )
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
    engines = [ENGINES[name](path) for name in args.engines.split(",")]
    measure(engines, pairs, args.runs)
    text = report(engines, len(pairs), args)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{args.workload}-{args.model}.md").open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    plot(engines, len(pairs), f"{args.workload} / {args.model}", RESULTS / f"{args.workload}-{args.model}.png")


if __name__ == "__main__":
    main()
