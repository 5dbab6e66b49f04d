"""The Typer application and the options every model-loading command shares."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console

from rerankd.errors import RerankdError
from rerankd.settings import Settings

app = typer.Typer(
    name="rerankd",
    help="Load any text reranker, score query-document pairs, serve them.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model folder, hub id or packaged model name.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda[:N], npu[:N] or mps.")]
DtypeOpt = Annotated[str | None, typer.Option(help="auto, float32, float16 or bfloat16.")]
MaxLenOpt = Annotated[int | None, typer.Option("--max-length", help="Max tokens per input (model default).")]
FamilyOpt = Annotated[str | None, typer.Option(help="Override family detection (see `rerankd models`).")]
RemoteOpt = Annotated[bool | None, typer.Option("--trust-remote-code", help="Allow the model's own Python code.")]
BackendOpt = Annotated[str | None, typer.Option(help="torch or onnx (ONNX Runtime; encoder families).")]
QuantizeOpt = Annotated[str | None, typer.Option(help="int8: dynamic int8 on CPU (encoder families), or none.")]


def make_settings(**flags: Any) -> Settings:
    """Settings from RERANKD_* env vars with the given command-line flags applied on top."""
    try:
        return Settings().with_overrides(**flags)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
        raise  # unreachable, fail() exits


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def quiet_libraries() -> None:
    """The CLI owns the terminal: silence third-party progress bars and chatty loggers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def load_reranker(settings: Settings) -> Any:
    from rerankd.reranker import Reranker

    quiet_libraries()
    try:
        with err_console.status(f"loading {settings.model} ..."):
            return Reranker.from_pretrained(settings.model, **settings.reranker_kwargs())
    except RerankdError as exc:
        fail(exc.message)
