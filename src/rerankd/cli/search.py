"""``rerankd index`` (build or update an embedded search index) and ``rerankd search`` (retrieve, then rerank), and
the ``--first-stage*`` options that ``rerankd search`` and ``rerankd serve`` share (an Elasticsearch or OpenSearch
cluster as the first stage; each has a ``RERANKD_FIRST_STAGE*`` env var twin)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from rerankd.pipeline import Retriever
    from rerankd.settings import Settings

FirstStageOpt = Annotated[
    str | None, typer.Option("--first-stage", help="index (the default: --index), elasticsearch or opensearch.")
]
FirstStageUrlOpt = Annotated[list[str] | None, typer.Option("--first-stage-url", help="Cluster node URL; repeatable.")]
FirstStageIndexOpt = Annotated[str | None, typer.Option("--first-stage-index", help="Cluster index or alias searched.")]
FirstStageQueryOpt = Annotated[
    str | None, typer.Option("--first-stage-query", help='Query DSL, JSON or @file; "{{query}}" is the query text.')
]
FirstStageFieldsOpt = Annotated[
    str | None, typer.Option("--first-stage-fields", help="Hit fields: id=,title=,text=,metadata=,filter_prefix=.")
]
FirstStageApiKeyOpt = Annotated[str | None, typer.Option("--first-stage-api-key", help="Elasticsearch API key.")]
FirstStageAuthOpt = Annotated[str | None, typer.Option("--first-stage-auth", help="Basic auth user:password.")]
FirstStageCaOpt = Annotated[str | None, typer.Option("--first-stage-ca-certs", help="CA file of the cluster's TLS.")]
FirstStageVerifyOpt = Annotated[
    bool | None,
    typer.Option("--first-stage-verify-certs/--no-first-stage-verify-certs", help="Verify the cluster's certificate."),
]
FirstStageTimeoutOpt = Annotated[
    float | None, typer.Option("--first-stage-timeout", help="Seconds one cluster search may take (default 10).")
]


def first_stage_flags(
    first_stage: str | None, url: list[str] | None, index: str | None, query: str | None, fields: str | None,
    api_key: str | None, auth: str | None, ca_certs: str | None, verify: bool | None, timeout: float | None,
) -> dict[str, Any]:  # fmt: skip
    """The ``--first-stage*`` flags as Settings fields (None: not given, the env var or default applies)."""
    return {
        "first_stage": first_stage, "first_stage_url": tuple(url) if url else None, "first_stage_index": index,
        "first_stage_query": query, "first_stage_fields": fields, "first_stage_api_key": api_key,
        "first_stage_auth": auth, "first_stage_ca_certs": ca_certs, "first_stage_verify_certs": verify,
        "first_stage_timeout_s": timeout,
    }  # fmt: skip


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


def _first_stage(settings: Settings, index: Path, retriever: str | None, fusion: str, device: str | None) -> Retriever:
    """The cluster ``settings`` name, else ``retriever`` (bm25 by default) over the index folder."""
    from rerankd.pipeline import SearchIndex, make_retriever
    from rerankd.pipeline.first_stage import cluster_retriever

    cluster = cluster_retriever(settings)
    if cluster is not None:
        if retriever is not None:
            fail(
                f"--retriever picks a retriever over --index; --first-stage {settings.first_stage} searches the cluster"
            )
        return cluster
    from rerankd.cli.extras import require

    require("search", "rerankd search over --index", ("tantivy",))  # before the folder: name the extra first
    searched = SearchIndex(index)
    name = retriever or "bm25"
    encoder = None
    dense = searched.manifest.dense
    if name in ("dense", "hybrid") and dense is not None:
        encoder = load_reranker(make_settings(model=dense.model, device=device))
    return make_retriever(name, searched, encoder, fusion=fusion)  # type: ignore[arg-type]


@command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="The search query.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder built by `rerankd index`.")] = Path(
        "index"
    ),
    retriever: Annotated[
        str | None, typer.Option(help="First stage over --index: bm25 (default), dense or hybrid.")
    ] = None,
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
    first_stage: FirstStageOpt = None,
    first_stage_url: FirstStageUrlOpt = None,
    first_stage_index: FirstStageIndexOpt = None,
    first_stage_query: FirstStageQueryOpt = None,
    first_stage_fields: FirstStageFieldsOpt = None,
    first_stage_api_key: FirstStageApiKeyOpt = None,
    first_stage_auth: FirstStageAuthOpt = None,
    first_stage_ca_certs: FirstStageCaOpt = None,
    first_stage_verify_certs: FirstStageVerifyOpt = None,
    first_stage_timeout: FirstStageTimeoutOpt = None,
) -> None:
    """Search an index (BM25, dense or hybrid) or an Elasticsearch / OpenSearch cluster (--first-stage), then
    rerank the candidates with --model."""
    from rerankd.pipeline import Pipeline

    flags = first_stage_flags(first_stage, first_stage_url, first_stage_index, first_stage_query, first_stage_fields,
                              first_stage_api_key, first_stage_auth, first_stage_ca_certs, first_stage_verify_certs,
                              first_stage_timeout)  # fmt: skip
    settings = make_settings(
        model=model, device=device, dtype=dtype, max_length=max_length, backend=backend, quantize=quantize, **flags
    )
    parsed_filters = _parse_filters(filters)
    first = _first_stage(settings, index, retriever, fusion, device)
    reranker = None if no_rerank else load_reranker(settings)
    results = Pipeline(first, reranker).search(query, k=k, top_n=top_n, filters=parsed_filters)
    if as_json:
        console.print_json(json.dumps(results.to_dict(), ensure_ascii=False))
        return
    from rich.table import Table

    timings = ", ".join(f"{name} {ms:.1f} ms" for name, ms in results.timings_ms.items())
    table = Table(title=f"{query!r} - {results.retriever} top {k} -> {results.model or 'no reranker'} ({timings})")
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
