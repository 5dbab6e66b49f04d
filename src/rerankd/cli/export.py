"""``rerankd export --onnx MODEL OUT``: write an encoder model as an ONNX model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerankd.cli.app import FamilyOpt, RemoteOpt, command, console, err_console, fail, quiet_libraries
from rerankd.cli.extras import require


@command()
def export(
    model: Annotated[str, typer.Argument(help="Model folder, hub id or packaged model name.")],
    out: Annotated[Path, typer.Argument(help="Folder to write: the graph plus config and tokenizer files.")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export an ONNX graph (the only format so far).")] = False,
    quantize: Annotated[
        str | None, typer.Option(help="Also write a dynamic int8 graph (model_int8.onnx): int8.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export in OUT.")] = False,
    family: FamilyOpt = None,
    trust_remote_code: RemoteOpt = None,
) -> None:
    """Export a cross-encoder or bi-encoder as an ONNX folder: it loads with ONNX Runtime (no torch weights needed)."""
    from rich.table import Table

    from rerankd.export import export_onnx

    if not onnx:
        fail("choose an export format: --onnx")
    if quantize not in (None, "int8"):
        fail(f"unknown --quantize {quantize!r}; the only choice is int8")
    require("onnx", "rerankd export --onnx")
    quiet_libraries()
    with err_console.status(f"exporting {model} ..."):
        report = export_onnx(
            model,
            out,
            family=family,
            quantize="int8" if quantize else None,
            trust_remote_code=bool(trust_remote_code),
            overwrite=force,
        )
    table = Table(title=f"{model} -> {report.folder} ({report.family})")
    table.add_column("graph")
    table.add_column("inputs -> output")
    table.add_column("max |Δ| vs torch fp32 (probe)", justify="right")
    signature = f"{', '.join(report.inputs)} -> {report.output}"
    table.add_row(report.graph.name, signature, f"{report.max_abs_diff:.2e}")
    if report.int8_graph is not None and report.int8_max_abs_diff is not None:
        table.add_row(report.int8_graph.name, signature, f"{report.int8_max_abs_diff:.2e}")
    console.print(table)
    folder = str(report.folder)
    console.print("It loads with ONNX Runtime by itself (no torch weights in it):", soft_wrap=True)
    console.print(f'  CLI:    rerankd rank -m {folder} -q "your query" -d docs.txt', soft_wrap=True, markup=False)
    console.print(f'  Python: Reranker.from_pretrained("{folder}")', soft_wrap=True, markup=False)
    if report.int8_graph is not None:
        console.print('  int8:   add --quantize int8 (CLI) or quantize="int8" (Python)', soft_wrap=True)
