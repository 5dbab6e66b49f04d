"""``rerankd batch``: score a file of pairs, query x candidates groups, or a BEIR folder + run, offline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    err_console,
    fail,
    load_reranker,
    make_settings,
)
from rerankd.cli.extras import require

if TYPE_CHECKING:
    from rich.progress import ProgressColumn

    from rerankd.batch import Job, JobSpec
    from rerankd.settings import Settings


def rate_column() -> ProgressColumn:
    """Pairs per second over rich's recent window (rich.progress is imported here: not at `rerankd --help`)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.speed
            return Text(f"{speed:,.0f} pairs/s" if speed else "-- pairs/s", style="progress.data.speed")

    return RateColumn()


@command()
def batch(
    input_path: Annotated[Path, typer.Argument(help="JSONL/Parquet of pairs or groups, or a BEIR folder (+ --run).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output: .jsonl, .parquet or .trec (run file).")],
    run: Annotated[Path | None, typer.Option(help="TREC run file to re-rank (input: a BEIR folder).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Documents per query taken from --run.")] = 100,
    out_format: Annotated[
        str | None, typer.Option("--format", help="jsonl, parquet or trec (default: suffix).")
    ] = None,
    layout: Annotated[str | None, typer.Option(help="pairs or groups (default: from the first record).")] = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run on Ray Data: `local` (start Ray here), `auto` or a cluster address."),
    ] = None,
    actors: Annotated[int, typer.Option(min=1, help="--ray: model actors (one model each).")] = 1,
    actor_cpus: Annotated[float, typer.Option(help="--ray: CPUs per actor.")] = 1.0,
    actor_gpus: Annotated[float, typer.Option(help="--ray: GPUs per actor (0 on CPU clusters).")] = 0.0,
    shard_rows: Annotated[int | None, typer.Option(min=1, help="Pairs per output shard (default: 4 steps).")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard an unfinished job and its output.")] = False,
    tag: Annotated[str, typer.Option(help="TREC run tag.")] = "rerankd",
    raw: Annotated[bool, typer.Option("--raw", help="Raw logits instead of normalised scores.")] = False,
    batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per forward pass.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Rows per forward pass.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_length: MaxLenOpt = None,
    family: FamilyOpt = None,
    trust_remote_code: RemoteOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Score pairs offline at any size: streaming, resumable (rerun the same command), deterministic order."""
    from rerankd.batch import JobSpec, format_of

    settings = make_settings(
        model=model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        family=family,
        trust_remote_code=trust_remote_code,
        backend=backend,
        quantize=quantize,
        batch_tokens=batch_tokens,
        max_batch_size=max_batch_size,
        normalize=False if raw else None,
    )
    if layout not in (None, "pairs", "groups"):
        fail(f"--layout must be pairs or groups, not {layout!r}")
    if ray is not None:
        require("ray", "--ray")
    spec = JobSpec(
        input=input_path,
        output=output,
        model=settings.model,
        reranker=settings.load_options().flat(),
        format=format_of(output, out_format),
        run=run,
        top_k=top_k,
        layout=layout,  # type: ignore[arg-type]
        tag=tag,
        shard_rows=shard_rows,
    )
    if spec.format == "parquet" or input_path.suffix.lower() == ".parquet":
        require("batch", "Parquet files", ("pyarrow",))
    if ray is None:
        _run_here(spec, settings, restart)
    else:
        resources = {"actors": actors, "num_cpus": actor_cpus, "num_gpus": actor_gpus}
        _run_on_ray(spec, settings, restart, ray, resources)


def _run_here(spec: JobSpec, settings: Settings, restart: bool) -> None:
    from rerankd.batch import open_job, run_local, step_rows

    reranker = load_reranker(settings)
    job = open_job(spec, lambda sample: step_rows(reranker, sample), restart=restart)
    with _progress(job) as advance:
        run_local(job, reranker, advance)


def _run_on_ray(spec: JobSpec, settings: Settings, restart: bool, address: str, resources: dict[str, Any]) -> None:
    from rerankd.batch import open_job, step_rows
    from rerankd.distributed.batch import run_on_ray

    def sizer(sample: Any) -> int:  # only for a new job: the driver counts tokens with the model's tokenizer
        return int(step_rows(load_reranker(settings.with_overrides(device="cpu")), sample))

    job = open_job(spec, sizer, restart=restart)
    with _progress(job) as advance:
        run_on_ray(job, address=address, progress=advance, **resources)


class _progress:
    """A rich progress bar over the job's pairs (pairs/s and ETA); yields the ``advance(n)`` callback, and on
    exit says how many pairs this run scored (an interrupted run's pairs are never scored again)."""

    def __init__(self, job: Job) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.job = job
        columns = (
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            rate_column(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
        )
        self.bar = Progress(*columns, console=err_console, transient=False)
        self.scored = 0
        self.started = time.perf_counter()

    def __enter__(self) -> Any:
        self.bar.__enter__()
        resumed = self.job.resumed_rows()
        if resumed:
            err_console.print(f"resuming: {resumed:,} of {self.job.scan.total:,} pairs already scored")
        task = self.bar.add_task("score", total=self.job.scan.total, completed=resumed)

        def advance(n: int) -> None:
            self.scored += n
            self.bar.advance(task, n)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)
        if exc[0] is None:
            seconds = time.perf_counter() - self.started
            rate = self.scored / seconds if seconds > 0 else 0.0
            err_console.print(
                f"wrote {self.job.scan.total:,} scored pairs to {self.job.spec.output} ({self.job.spec.format}); "
                f"this run scored {self.scored:,} in {seconds:.1f} s ({rate:,.1f} pairs/s)"
            )
