"""``rerankd eval``, ``rerankd compare`` and ``rerankd smoke``: thin front ends over :mod:`rerankd.evaluation`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rerankd.cli.app import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    MaxLenOpt,
    QuantizeOpt,
    RemoteOpt,
    command,
    console,
    err_console,
    fail,
    locate,
    make_settings,
    quiet_libraries,
)
from rerankd.cli.extras import require

if TYPE_CHECKING:
    from rerankd.evaluation import Configuration, StageProgress, SystemRun
    from rerankd.reranker import Reranker
    from rerankd.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON report to this file.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot of the report to this file.")]
BatchTokensOpt = Annotated[int | None, typer.Option("--batch-tokens", help="Padded tokens per forward pass.")]
InstructionOpt = Annotated[str | None, typer.Option(help="Instruction for instruction-aware models.")]
CutoffOpt = Annotated[
    list[int] | None, typer.Option("--cutoff-layer", help="Exit layer of a layerwise model (repeatable).")
]
SplitOpt = Annotated[str, typer.Option(help="qrels split: qrels/SPLIT.tsv.")]
MaxQueriesOpt = Annotated[int | None, typer.Option("--max-queries", min=1, help="Only the first N judged queries.")]


@contextmanager
def progress_bars() -> Iterator[StageProgress]:
    """A :data:`StageProgress` that draws one rich progress bar per stage on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bars:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield report


def load_model(model: str, settings: Settings, progress: StageProgress) -> Reranker:
    from rerankd.reranker import Reranker

    locate(model)
    stage = f"load {model}"
    progress(stage, 0, 1)
    reranker = Reranker.from_pretrained(model, settings.load_options())
    progress(stage, 1, 1)
    return reranker


def emit_report(payload: dict[str, Any], as_json: bool, output: Path | None) -> None:
    from rerankd.evaluation.tables import json_ready

    text = json.dumps(json_ready(payload), ensure_ascii=False, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
    if as_json:
        typer.echo(text)


def _first_stage(
    dataset: Any, run: Path | None, retriever: str | None, settings: Settings, top_k: int, progress: StageProgress
) -> SystemRun:
    from rerankd.evaluation import first_stage_bm25, first_stage_dense, first_stage_run_file

    if run is not None and retriever is not None:
        fail("give either --run or --retriever, not both")
    if run is not None:
        return first_stage_run_file(run, dataset, top_k)
    if retriever is not None:
        return first_stage_dense(load_model(retriever, settings, progress), dataset, top_k, progress)
    return first_stage_bm25(dataset, top_k, progress)


def load_base(settings: Settings) -> dict[str, Any]:
    """The command's load options as ``KEY=VALUE`` bases for configurations (read without importing torch)."""
    from rerankd.settings import LOAD_FIELDS

    return {"model": settings.model, **settings.model_dump(include=set(LOAD_FIELDS))}


def parse_model_specs(models: Sequence[str], settings: Settings) -> list[tuple[str, Configuration]]:
    """Every ``--model`` spec parsed up front, so a bad KEY=VALUE fails before the first stage runs or a model loads.

    A spec is ``MODEL`` or ``MODEL;KEY=VALUE;...`` with the keys of ``rerankd compare`` (e.g.
    ``bge;backend=onnx;quantize=int8`` or ``bge;dtype=bfloat16``): its own load and call options on top of
    the command's."""
    from rerankd.evaluation import parse_configuration

    base = load_base(settings)
    parsed = []
    for spec in models:
        model, *assignments = [part.strip() for part in spec.split(";")]
        parsed.append((spec, parse_configuration(spec, {**base, "model": model}, [a for a in assignments if a])))
    return parsed


def _rerank_all(
    dataset: Any,
    first: SystemRun,
    configurations: Sequence[tuple[str, Configuration]],
    progress: StageProgress,
    options: dict[str, Any],
) -> list[SystemRun]:
    """The first stage plus one re-ranked run per model spec; models are loaded one at a time."""
    from rerankd.evaluation import rerank_system
    from rerankd.evaluation.configurations import load_configuration
    from rerankd.evaluation.quality import unique_name

    systems = [first]
    for spec, config in configurations:
        reranker = load_configuration(config, progress)
        name = unique_name(spec, [s.name for s in systems])
        call = {**options, **config.call}
        systems.append(rerank_system(reranker, dataset, first, name=name, progress=progress, **call))
        del reranker  # free it before the next model loads
    return systems


@command("eval")
def eval_command(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/.")],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Re-ranker to evaluate (repeat for A/B); MODEL;KEY=VALUE;... sets its own options."
        ),
    ] = None,
    first_stage_only: Annotated[
        bool, typer.Option("--first-stage-only", help="Evaluate the first stage alone.")
    ] = False,
    run: Annotated[Path | None, typer.Option(help="First stage from a TREC run file instead of BM25.")] = None,
    retriever: Annotated[str | None, typer.Option(help="First stage from this bi-encoder instead of BM25.")] = None,
    split: SplitOpt = "test",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="First-stage candidates re-ranked per query.")] = 100,
    max_queries: MaxQueriesOpt = None,
    measures: Annotated[list[str] | None, typer.Option("--measure", help="Measure, e.g. ndcg@10 (repeat).")] = None,
    ab_measure: Annotated[str, typer.Option(help="Measure of the paired A/B tests.")] = "ndcg@10",
    resamples: Annotated[int, typer.Option(min=100, help="Randomisation-test resamples.")] = 10_000,
    instruction: InstructionOpt = None,
    cutoff_layers: CutoffOpt = None,
    save_runs: Annotated[Path | None, typer.Option(help="Write each system's TREC run into this folder.")] = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    plot: PlotOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    batch_tokens: BatchTokensOpt = None,
    trust_remote_code: RemoteOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Ranking quality on a BEIR-layout dataset: first stage, re-rankers, metrics and A/B tests.

    First stage: BM25, --run FILE or --retriever MODEL; each --model re-ranks its --top-k candidates.
    Per-model options use the keys of `rerankd compare`: -m 'bge;dtype=float32' -m 'bge;backend=onnx;quantize=int8'.

    Reports nDCG@1/3/5/10, MRR@10, MAP, Recall@10/100 per system and paired A/B tests of every pair.
    """
    from rerankd.evaluation import DEFAULT_MEASURES, build_quality_report, load_beir, write_trec_run
    from rerankd.evaluation.plots import plot_quality
    from rerankd.evaluation.tables import comparison_table, quality_table

    settings = make_settings(
        device=device,
        dtype=dtype,
        max_length=max_length,
        batch_tokens=batch_tokens,
        trust_remote_code=trust_remote_code,
        backend=backend,
        quantize=quantize,
    )
    chosen = parse_model_specs([] if first_stage_only else (models or [settings.model]), settings)
    require("eval", "rerankd eval", ("scipy",))  # paired tests; checked before the first stage runs
    if run is None and retriever is None:
        require("eval", "the BM25 first stage", ("tantivy",))
    if plot is not None:
        require("eval", "--plot", ("matplotlib",))
    quiet_libraries()
    dataset = load_beir(dataset_dir, split, max_queries)
    with progress_bars() as progress:
        first = _first_stage(dataset, run, retriever, settings, top_k, progress)
        options = {"top_k": top_k, "instruction": instruction, "cutoff_layers": cutoff_layers}
        systems = _rerank_all(dataset, first, chosen, progress, options)
    report = build_quality_report(
        dataset,
        systems,
        top_k=top_k,
        measures=measures or DEFAULT_MEASURES,
        ab_measure=ab_measure,
        resamples=resamples,
    )
    if save_runs is not None:
        save_runs.mkdir(parents=True, exist_ok=True)
        for system in systems:
            write_trec_run(system.run, save_runs / f"{re.sub(r'[^A-Za-z0-9._=-]+', '_', system.name)}.trec")
    if plot is not None:
        plot_quality(report, plot)
    emit_report(report.to_dict(), as_json, output)
    if not as_json:
        console.print(quality_table(report))
        if report.comparisons:
            console.print(comparison_table(report))


@command()
def smoke(
    model: Annotated[str | None, typer.Argument(help="Model folder, hub id or packaged model name.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs for latency and throughput.")] = 5,
    instruction: InstructionOpt = None,
    cutoff_layers: CutoffOpt = None,
    raw: Annotated[bool, typer.Option("--raw", help="Raw logits instead of normalised scores.")] = False,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    family: FamilyOpt = None,
    trust_remote_code: RemoteOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Sanity check: does every relevant passage outrank its irrelevant one?

    Three queries (panda, capital of France, machine learning) with a relevant and an irrelevant passage each.

    Also reports load time, mean latency and throughput. Exits 1 on FAIL.
    """
    from rerankd.evaluation import run_smoke
    from rerankd.evaluation.tables import smoke_table, timing_table

    settings = make_settings(
        model=model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        family=family,
        trust_remote_code=trust_remote_code,
        backend=backend,
        quantize=quantize,
        normalize=False if raw else None,
    )
    quiet_libraries()
    with progress_bars() as progress:
        reranker = load_model(settings.model, settings, progress)
        report = run_smoke(
            reranker, repeats=repeats, instruction=instruction, cutoff_layers=cutoff_layers, progress=progress
        )
    emit_report(report.to_dict(), as_json, output)
    if not as_json:
        console.print(smoke_table(report))
        console.print(timing_table(report))
        verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
        console.print(f"overall: {verdict} (every relevant passage above its irrelevant one)")
    if not report.passed:
        raise typer.Exit(1)
