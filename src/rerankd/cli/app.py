"""The Typer application and the options every model-loading command shares."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from rerankd.errors import RerankdError

if TYPE_CHECKING:  # imported when used: `rerankd --help` must not pay for pydantic, let alone torch
    from rerankd.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="rerankd",
    help="Load any text reranker, score query-document pairs, serve them.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: no markup to eat "[eval]", and no rich import (half of `--help`'s time)
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
DeterministicOpt = Annotated[
    bool | None,
    typer.Option(
        "--deterministic", help="One input per forward pass: scores bit-identical whatever the batch (slower)."
    ),
]
QuantizeOpt = Annotated[str | None, typer.Option(help="int8: dynamic int8 on CPU (encoder families), or none.")]


def make_settings(**flags: Any) -> Settings:
    """Settings from RERANKD_* env vars with the given command-line flags applied on top."""
    from pydantic import ValidationError

    from rerankd.settings import Settings, explain

    try:
        settings = Settings().with_overrides(**flags)
    except ValidationError as exc:
        fail(explain(exc))
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
    if settings.backend == "onnx":
        from rerankd.cli.extras import require

        require("onnx", "--backend onnx")
    return settings


# Exit statuses: 0 success, 1 a check that ran and failed (compare, smoke), 2 a usage or input error the user can
# fix (bad flag value, unknown model, input too long), 3 the environment lacks something (an optional dependency,
# a device), 4 a service is unavailable (model hub unreachable, server not ready, overloaded).
EXIT_STATUS: dict[str, int] = {
    "missing_dependency": 3,
    "device_unavailable": 3,
    "model_fetch_failed": 4,
    "not_ready": 4,
    "first_stage_unavailable": 4,
    "store_unavailable": 4,
    "overloaded": 4,
    "timeout": 4,
}
USAGE_ERROR = 2


def exit_status(error: RerankdError) -> int:
    """The CLI's exit status for a typed error (one table for every command)."""
    return EXIT_STATUS.get(error.code, USAGE_ERROR)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """One ``error:`` line on stderr (never wrapped, never read as markup), then exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``app.command`` whose typed errors (and imports of optional packages that are not installed) become one
    ``error:`` line and :func:`exit_status` (no traceback)."""

    def register(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*a: P.args, **k: P.kwargs) -> R:
            try:
                return function(*a, **k)
            except RerankdError as exc:
                fail(exc.message, exit_status(exc))
            except ModuleNotFoundError as exc:  # an optional package the user did not install: name its extra
                from rerankd.cli.extras import missing_extra

                missing = missing_extra(exc)
                if missing is None:
                    raise
                fail(missing.message, exit_status(missing))

        app.command(*args, **kwargs)(run)
        return run

    return register


def quiet_libraries() -> None:
    """The CLI owns the terminal: silence third-party progress bars and chatty loggers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    quiet_hub()


def locate(model: str, **fetch: Any) -> None:
    """Find ``model``'s files before torch is imported: a missing model, or a hub that cannot be reached with no
    cached copy, fails in a fraction of a second (the loader then reuses what was found)."""
    from rerankd.loading import resolve_model

    quiet_hub()
    resolve_model(model, **{key: value for key, value in fetch.items() if value is not None})


def quiet_hub() -> None:
    """huggingface_hub logs through its own handler: propagating as well printed each of its warnings twice."""
    hub = logging.getLogger("huggingface_hub")
    hub.propagate = False
    hub.setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def load_reranker(settings: Settings) -> Any:
    locate(settings.model)
    from rerankd.reranker import Reranker

    quiet_libraries()
    with err_console.status(f"loading {settings.model} ..."):
        return Reranker.from_pretrained(settings.model, settings.load_options())
