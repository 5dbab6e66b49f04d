"""``rerankd index`` (build or update an embedded search index) and ``rerankd search`` (retrieve, then rerank)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rerankd.cli.app import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    MaxLenOpt,
    ModelOpt,
    QuantizeOpt,
    command,
    console,
    err_console,
    fail,
    load_reranker,
    make_settings,
    quiet_libraries,
)


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        fail(f"no such ids file: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@command("index")
def index_command(
    corpus: Annotated[
        Path | None, typer.Argument(help="JSONL / Parquet file or BEIR folder (id, title, text, metadata).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Index folder (created, or updated in place).")] = Path(
        "index"
    ),
    language: Annotated[
        str | None, typer.Option(help="Analyzer: english (default), french, german, ..., or none.")
    ] = None,
    dense_model: Annotated[
        str | None, typer.Option("--dense-model", help="Bi-encoder for dense/hybrid retrieval (vectors stored).")
    ] = None,
    hnsw: Annotated[bool, typer.Option("--hnsw", help="Also build an HNSW graph (else exact vector search).")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Replace the index's contents with CORPUS.")] = False,
    delete: Annotated[
        Path | None, typer.Option("--delete", help="File of document ids to delete (one per line).")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Skip rows without id/text (each is reported) instead of failing.")
    ] = False,
    id_field: Annotated[str | None, typer.Option(help="Field holding the id (default: id or _id).")] = None,
    title_field: Annotated[str, typer.Option(help="Field holding the title.")] = "title",
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    device: DeviceOpt = None,
) -> None:
    """Build or update a search index: add new documents, replace those whose id exists, delete --delete ids.

    Writes are atomic: until the command finishes, readers (and a crash) see the previous index."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rerankd.pipeline import FieldMap, IndexConfig, IndexWriter, read_corpus

    if corpus is None and delete is None:
        fail("give a CORPUS to index, --delete IDS_FILE, or both")
    config = None
    if language is not None or dense_model is not None or hnsw or rebuild or not (out / "CURRENT").exists():
        config = IndexConfig(language=language or "english", dense_model=dense_model, hnsw=hnsw)
    encoder = None
    if dense_model is not None:
        encoder = load_reranker(make_settings(model=dense_model, device=device))
    quiet_libraries()
    columns = (TextColumn("indexing"), BarColumn(), TextColumn("{task.completed} docs"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("index", total=None)
        writer = IndexWriter(out, config, rebuild=rebuild, encoder=encoder, progress=lambda n: bar.advance(task, n))
        with writer:
            if corpus is not None:
                fields = FieldMap(id=id_field, title=title_field, text=text_field)
                writer.upsert(read_corpus(corpus, fields), skip_invalid=skip_invalid)
            if delete is not None:
                writer.delete(_read_ids(delete))
    report = writer.report
    for problem in report.skipped:
        err_console.print(f"[yellow]skipped[/] {problem}")
    if report.missing:
        err_console.print(f"[yellow]not in the index, not deleted:[/] {', '.join(report.missing[:20])}")
    rate = (report.added + report.updated) / report.seconds if report.seconds > 0 else 0.0
    console.print(
        f"{out}: generation {report.generation}, {report.live} documents "
        f"(+{report.added} added, {report.updated} updated, {report.deleted} deleted, "
        f"{len(report.skipped)} skipped) in {report.seconds:.1f} s ({rate:,.0f} docs/s)"
    )


def _parse_filters(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--filter is not valid JSON: {exc.msg}")
    if not isinstance(value, dict):
        fail('--filter must be a JSON object, e.g. \'{"lang": "en", "year": {"gte": 2020}}\'')
    return value


@command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="The search query.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder built by `rerankd index`.")] = Path(
        "index"
    ),
    retriever: Annotated[str, typer.Option(help="First stage: bm25, dense or hybrid.")] = "bm25",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf or weighted.")] = "rrf",
    k: Annotated[int, typer.Option("-k", min=1, help="First-stage candidates to rerank.")] = 100,
    top_n: Annotated[int, typer.Option("--top-n", "-n", min=1, help="Results to show.")] = 10,
    filters: Annotated[
        str | None, typer.Option("--filter", help='Metadata filter (JSON), e.g. {"lang": "en"}.')
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="First stage only.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (each result with its id).")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Search an index: first-stage candidates (BM25, dense or hybrid), re-ranked by --model."""
    from rerankd.pipeline import Pipeline, SearchIndex, make_retriever

    parsed_filters = _parse_filters(filters)
    searched = SearchIndex(index)
    encoder = None
    dense = searched.manifest.dense
    if retriever in ("dense", "hybrid") and dense is not None:
        encoder = load_reranker(make_settings(model=dense.model, device=device))
    first_stage = make_retriever(retriever, searched, encoder, fusion=fusion)  # type: ignore[arg-type]
    reranker = None
    if not no_rerank:
        settings = make_settings(
            model=model, device=device, dtype=dtype, max_length=max_length, backend=backend, quantize=quantize
        )
        reranker = load_reranker(settings)
    results = Pipeline(first_stage, reranker).search(query, k=k, top_n=top_n, filters=parsed_filters)
    if as_json:
        console.print_json(json.dumps(results.to_dict(), ensure_ascii=False))
        return
    from rich.table import Table

    timings = ", ".join(f"{name} {ms:.1f} ms" for name, ms in results.timings_ms.items())
    table = Table(title=f"{query!r} - {retriever} top {k} -> {results.model or 'no reranker'} ({timings})")
    for column in ("rank", "id", "score", "first stage (rank)", "title", "text"):
        table.add_column(column, overflow="fold", justify="right" if column in ("rank", "score") else "left")
    for hit in results.hits:
        table.add_row(
            str(hit.rank),
            hit.id,
            f"{hit.score:.4f}",
            f"{hit.first_stage_score:.4f} ({hit.first_stage_rank})",
            hit.document.title,
            hit.document.text[:300],
        )
    console.print(table)
