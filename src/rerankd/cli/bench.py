"""``rerankd bench MODEL``: seed 000's performance table, generalised."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rerankd.bench.workloads import WORKLOADS
from rerankd.cli.app import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    MaxLenOpt,
    QuantizeOpt,
    command,
    console,
    err_console,
    fail,
    locate,
    make_settings,
    quiet_libraries,
)

ROWS = [
    ("CPU", "cpu", "{}"),
    ("load time", "load_s", "{:.2f} s"),
    ("time to first result", "first_result_s", "{:.2f} s"),
    ("latency p50 (one query)", "latency_p50_ms", "{:.1f} ms"),
    ("latency p99 (one query)", "latency_p99_ms", "{:.1f} ms"),
    ("throughput", "throughput_pairs_s", "{:.1f} pairs/s"),
    ("peak RSS", "peak_rss_mb", "{:.0f} MiB"),
    ("tokens per pair", "tokens_per_pair", "{:.1f}"),
    ("padding waste", "padding_waste", "{:.1%}"),
    ("achieved", "achieved_gflops", "{:.1f} GFLOP/s"),
    ("matmul peak (measured)", "matmul_peak_gflops", "{:.1f} GFLOP/s"),
    ("fraction of peak", "peak_fraction", "{:.0%}"),
]


@command()
def bench(
    model: Annotated[str, typer.Argument(help="Model folder, hub id or packaged model name.")],
    workload: Annotated[str, typer.Option(help=f"One of {', '.join(sorted(WORKLOADS))}.")] = "rerank-100",
    runs: Annotated[int, typer.Option(min=1, help="Timed passes over the workload.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    family: FamilyOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Measure load time, latency, throughput, memory, GFLOP/s vs the matmul peak, and padding waste."""
    if workload not in WORKLOADS:
        fail(f"unknown workload {workload!r}; choose from {', '.join(sorted(WORKLOADS))}")
    flags = {"device": device, "dtype": dtype, "max_length": max_length, "family": family}
    settings = make_settings(**flags, backend=backend, quantize=quantize)
    locate(model)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from rerankd.bench.run import run_bench

    quiet_libraries()
    load = settings.load_options()
    n_queries = len(WORKLOADS[workload]().queries) * runs
    columns = (TextColumn("benchmarking"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("bench", total=n_queries)
        report = run_bench(model, load, workload, runs, progress=lambda n: bar.advance(task, n))
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    engine = report.dtype if report.backend == "torch" else f"{report.backend} {report.dtype}"
    engine += f" {report.quantize}" if report.quantize else ""
    table = Table(title=f"{model} - {report.family}, {report.device}, {engine} - {workload} x {runs}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    values = report.as_dict()
    for label, key, fmt in ROWS:
        text = "n/a" if values[key] is None else fmt.format(values[key])
        if key == "matmul_peak_gflops":
            label = f"matmul peak (model GEMMs, best of {report.peak_trials})"
        if key == "peak_fraction" and report.peak_note is not None:
            text = f"[bold yellow]{text} ⚠ {report.peak_note}[/]"  # never a bare fraction above 100%
        table.add_row(label, text)
    console.print(table)
    if report.peak_shapes:
        console.print(f"peak measured on {report.peak_shapes} ({report.dtype})", soft_wrap=True, highlight=False)
