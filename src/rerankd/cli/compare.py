"""``rerankd compare``: the precision of one configuration of a model against another (a thin front end over
:mod:`rerankd.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rerankd.cli.app import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    MaxLenOpt,
    ModelOpt,
    QuantizeOpt,
    RemoteOpt,
    command,
    console,
    fail,
    locate,
    make_settings,
    quiet_libraries,
)
from rerankd.cli.evaluate import (
    BatchTokensOpt,
    JsonOpt,
    OutputOpt,
    PlotOpt,
    SplitOpt,
    emit_report,
    load_base,
    progress_bars,
)
from rerankd.cli.extras import require

if TYPE_CHECKING:
    from rerankd.evaluation import QueryDocumentPair


def _compare_inputs(
    dataset_dir: Path | None, pairs_file: Path | None, split: str, max_queries: int, per_query: int
) -> list[QueryDocumentPair]:
    """Pairs from a BEIR folder (each query with its BM25 top ``per_query``), a JSONL file, or the built-in set."""
    from rerankd.evaluation import (
        QueryDocumentPair,
        bm25_first_stage,
        default_compare_pairs,
        load_beir,
        load_pairs_jsonl,
        ranked_documents,
    )

    if dataset_dir is not None and pairs_file is not None:
        fail("give either --dataset or --pairs, not both")
    if pairs_file is not None:
        return load_pairs_jsonl(pairs_file)
    if dataset_dir is None:
        return default_compare_pairs()
    dataset = load_beir(dataset_dir, split, max_queries)
    run = bm25_first_stage(dataset, per_query)
    return [
        QueryDocumentPair(dataset.queries[qid], dataset.corpus[docid])
        for qid, scores in run.items()
        for docid in ranked_documents(scores)
    ]


@command()
def compare(
    config_a: Annotated[list[str] | None, typer.Option("--a", help="Configuration A: KEY=VALUE (repeat).")] = None,
    config_b: Annotated[list[str] | None, typer.Option("--b", help="Configuration B: KEY=VALUE (repeat).")] = None,
    dataset_dir: Annotated[Path | None, typer.Option("--dataset", help="BEIR folder: queries x BM25 top docs.")] = None,
    pairs_file: Annotated[Path | None, typer.Option("--pairs", help='JSONL of {"query", "document"}.')] = None,
    split: SplitOpt = "test",
    max_queries: Annotated[int, typer.Option("--max-queries", min=1, help="Queries taken from --dataset.")] = 50,
    per_query: Annotated[int, typer.Option("--per-query", min=1, help="BM25 documents per --dataset query.")] = 10,
    embeddings: Annotated[
        bool, typer.Option("--embeddings", help="Compare embeddings (bi-encoders) instead of scores.")
    ] = False,
    min_spearman: Annotated[float, typer.Option(help="PASS: mean Spearman per query at least this.")] = 0.98,
    max_spread_error: Annotated[float, typer.Option(help="PASS: max |B-A| at most this share of A's spread.")] = 0.02,
    max_rel_error: Annotated[
        float, typer.Option(help="PASS: mean |B-A|/|A| over meaningful values at most this (0.01 = 1%).")
    ] = 0.01,
    meaningful: Annotated[
        float, typer.Option(help="Meaningful values for relative error: |A| >= this share of the spread.")
    ] = 0.1,
    min_cosine: Annotated[float, typer.Option(help="--embeddings: PASS needs every input's cosine >= this.")] = 0.99,
    min_overlap: Annotated[float | None, typer.Option(help="Optional: PASS needs top-k overlap >= this.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="k of the top-k overlap.")] = 3,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    plot: PlotOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    batch_tokens: BatchTokensOpt = None,
    family: FamilyOpt = None,
    trust_remote_code: RemoteOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Precision of one configuration of a model against another (device, dtype, batch size, ...).

    Example: --a dtype=float32 --b dtype=bfloat16. Reports cosine, MAE, RMSE, relative error, rank agreement.

    PASS is the rule dtype="auto" uses too (docs/evaluation.md): Spearman >= 0.98 per query on average, no
    score off by more than 2% of the spread, mean relative error <= 1% where |A| >= 10% of the spread.
    Exits 1 on FAIL.
    """
    from rerankd.evaluation import Thresholds, compare_configurations, parse_configuration
    from rerankd.evaluation.plots import plot_precision
    from rerankd.evaluation.tables import precision_inputs_table, precision_summary_table

    settings = make_settings(
        model=model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        batch_tokens=batch_tokens,
        family=family,
        trust_remote_code=trust_remote_code,
        backend=backend,
        quantize=quantize,
    )
    thresholds = Thresholds(
        min_spearman=min_spearman,
        max_spread_error=max_spread_error,
        max_relative_error=max_rel_error,
        meaningful_fraction=meaningful,
        min_cosine=min_cosine,
        min_top_k_overlap=min_overlap,
    )
    base = load_base(settings)
    configs = [
        parse_configuration(f"{name}: {', '.join(items)}" if items else name, base, items or [])
        for name, items in (("A", config_a), ("B", config_b))
    ]
    if not embeddings:
        require("eval", "rerankd compare (rank agreement)", ("scipy",))
    if dataset_dir is not None:
        require("eval", "--dataset (its BM25 first stage)", ("tantivy",))
    if plot is not None:
        require("eval", "--plot", ("matplotlib",))
    for config in configs:
        locate(config.load["model"], source=config.load.get("source"), revision=config.load.get("revision"))
    quiet_libraries()
    pairs = _compare_inputs(dataset_dir, pairs_file, split, max_queries, per_query)
    with progress_bars() as progress:
        report = compare_configurations(
            configs[0],
            configs[1],
            pairs,
            embeddings=embeddings,
            thresholds=thresholds,
            top_k=top_k,
            progress=progress,
        )
    if plot is not None:
        plot_precision(report, plot)
    emit_report(report.to_dict(), as_json, output)
    if not as_json:
        console.print(precision_inputs_table(report))
        console.print(precision_summary_table(report))
    if not report.passed:
        raise typer.Exit(1)
