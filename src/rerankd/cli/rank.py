"""``rerankd rank`` and ``rerankd models``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rerankd.cli.app import (
    BackendOpt,
    DeterministicOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    MaxLenOpt,
    ModelOpt,
    QuantizeOpt,
    RemoteOpt,
    command,
    console,
    err_console,
    fail,
    load_reranker,
    make_settings,
)

PROGRESS_THRESHOLD = 64


def read_documents(source: str) -> list[str]:
    """Documents from a .txt file (one per line), a .jsonl file (objects with "text", or strings) or stdin."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
        is_jsonl = bool(lines) and lines[0].lstrip().startswith(("{", '"'))
    else:
        path = Path(source)
        if path.is_dir():
            fail(f"--docs {source} is a folder; give a file (.txt: one document per line, .jsonl) or - for stdin")
        if not path.is_file():
            fail(f"no such documents file: {source}")
        lines = path.read_text(encoding="utf-8").splitlines()
        is_jsonl = path.suffix in (".jsonl", ".ndjson")
    lines = [line for line in lines if line.strip()]
    if not is_jsonl:
        return lines
    docs = []
    for number, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(f"line {number} is not valid JSON: {exc.msg}")
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            docs.append(item["text"])
        elif isinstance(item, str):
            docs.append(item)
        else:
            fail(f'line {number} needs a "text" string field')
    return docs


@command()
def rank(
    query: Annotated[str, typer.Option("--query", "-q", help="The query to rank documents for.")],
    docs: Annotated[
        str, typer.Option("--docs", "-d", help="Documents: .txt (one per line), .jsonl, or - for stdin.")
    ] = "-",
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", min=1, help="Only the best N.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Raw logits instead of normalised scores.")] = False,
    instruction: Annotated[str | None, typer.Option(help="Instruction for instruction-aware models.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    family: FamilyOpt = None,
    trust_remote_code: RemoteOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    deterministic: DeterministicOpt = None,
) -> None:
    """Rank documents for a query and print them best first."""
    settings = make_settings(
        model=model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        family=family,
        trust_remote_code=trust_remote_code,
        backend=backend,
        quantize=quantize,
        deterministic=deterministic,
        normalize=False if raw else None,
    )
    documents = read_documents(docs)
    if not documents:
        fail("no documents to rank")
    reranker = load_reranker(settings)
    results = _rank_with_progress(reranker, query, documents, top_n, instruction)
    if as_json:
        payload = {
            "model": settings.model,
            "family": reranker.info.family,
            "query": query,
            "results": [{"index": r.index, "score": r.score, "document": r.document} for r in results],
        }
        console.print_json(json.dumps(payload, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(title=f"{query!r} - {reranker.info.name} ({reranker.info.family}, {reranker.info.dtype})")
    table.add_column("rank", justify="right")
    table.add_column("index", justify="right")
    table.add_column("score", justify="right")
    table.add_column("document", overflow="fold")
    for position, result in enumerate(results, start=1):
        table.add_row(str(position), str(result.index), f"{result.score:.4f}", result.document)
    console.print(table)


def _rank_with_progress(reranker, query, documents, top_n, instruction):  # type: ignore[no-untyped-def]
    if len(documents) < PROGRESS_THRESHOLD:
        return reranker.rank(query, documents, top_n, instruction=instruction)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("score", total=len(documents))
        return reranker.rank(query, documents, top_n, instruction=instruction, progress=lambda n: bar.advance(task, n))


@command()
def models() -> None:
    """List the supported model families and how each is detected."""
    from rich.table import Table

    from rerankd.cli.catalogue import family_rows

    table = Table(title="rerankd model families (tried in this order)")
    table.add_column("family")
    table.add_column("detected by")
    table.add_column("what it is / score meaning", overflow="fold")
    table.add_column("can", overflow="fold")
    table.add_column("published ids", overflow="fold")
    for row in family_rows():
        table.add_row(row.name, row.detection, row.summary, ", ".join(row.can) or "-", ", ".join(row.known_ids) or "-")
    console.print(table)
    console.print("Override detection with --family NAME (library: family=NAME).")
