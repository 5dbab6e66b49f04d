"""A fast CLI: `--help`, `models` and argument errors never import torch or transformers (both are made absent
here, so an import would fail the command), argument errors come before any model loads, and help fits 80 columns.
Start-up time itself is measured by benchmarks/first_hour.py, not here."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer.main

from rerankd.cli import app
from tests.first_hour.conftest import Cli

HEAVY = ("torch", "transformers")


def commands() -> dict[str, list[str]]:
    """Every command's option names (long and short, negative forms included), from the Typer app itself."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    names = {}
    for name, command in group.commands.items():
        names[name] = [opt for param in command.params for opt in (*param.opts, *param.secondary_opts)]
    return names


def test_help_of_every_command_without_torch(cli: Cli) -> None:
    top = cli("--help", absent=HEAVY)
    assert top.code == 0, top.stderr
    assert "Usage: rerankd" in top.stdout
    listed = commands()
    assert {"rank", "serve", "compare", "eval", "export", "models"} <= set(listed)
    for name in listed:
        done = cli(name, "--help", absent=HEAVY)
        assert done.code == 0, (name, done.stderr)
        assert f"rerankd {name}" in done.stdout


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_at_80_columns_shows_every_flag_whole(cli: Cli, name: str) -> None:
    done = cli(name, "--help", env={"COLUMNS": "80"}, absent=HEAVY)
    assert done.code == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    assert "…" not in done.stdout
    words = set(done.stdout.replace("│", " ").replace(",", " ").split())
    missing = [opt for opt in commands()[name] if opt not in words]
    assert missing == [], f"cut off at 80 columns: {missing}"


def test_models_lists_from_its_cache_without_torch(cli: Cli) -> None:
    first = cli("models")  # computes the listing (imports the families) and remembers it
    assert first.code == 0, first.stderr
    assert "cross-encoder" in first.stdout and "bi-encoder" in first.stdout
    again = cli("models", absent=HEAVY)
    assert again.code == 0, again.stderr
    assert again.stdout == first.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "--b", "dtype=nonsense"], "dtype='nonsense': unknown dtype 'nonsense'; use auto, float32"),
        (["compare", "--a", "quantize=int4"], "configuration A: quantize=int4: quantize='int4': choose int8 or none"),
        (["compare", "--b", "backend=tf"], "backend='tf': choose torch or onnx"),
        (["compare", "--b", "device=gpu"], "unknown device 'gpu'; use auto, cpu, cuda[:N], npu[:N] or mps"),
        (["eval", "beir", "-m", "some/model;dtype=fp64"], "unknown dtype 'fp64'"),
        (["rank", "-q", "q", "--quantize", "int4"], "invalid --quantize 'int4' (env RERANKD_QUANTIZE): choose int8"),
        (["rank", "-q", "q", "--backend", "tf"], "invalid --backend 'tf' (env RERANKD_BACKEND): choose torch or onnx"),
        (["rank", "-q", "q", "--dtype", "fp64"], "invalid --dtype 'fp64' (env RERANKD_DTYPE): unknown dtype 'fp64'"),
        (["serve", "--port", "-1"], "invalid --port -1 (env RERANKD_PORT): input should be greater than or equal to 0"),
        (["bench", "m", "--workload", "nope"], "unknown workload 'nope'"),
    ],
)
def test_argument_errors_come_first_and_never_import_torch(cli: Cli, args: list[str], message: str) -> None:
    done = cli(*args, absent=HEAVY)
    assert done.code == 2, done.stderr
    assert done.error_lines == [f"error: {done.error_lines[0].removeprefix('error: ')}"]  # exactly one line
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_from_the_environment_are_checked_the_same_way(cli: Cli) -> None:
    done = cli("rank", "-q", "q", env={"RERANKD_QUANTIZE": "int4"}, absent=HEAVY)
    assert done.code == 2
    assert done.error_lines == ["error: invalid --quantize 'int4' (env RERANKD_QUANTIZE): choose int8 or none"]


def test_docs_given_a_folder_says_so(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "some-folder"
    folder.mkdir()
    done = cli("rank", "-q", "q", "--docs", f"{folder}/", absent=HEAVY)
    assert done.code == 2
    assert f"--docs {folder}/ is a folder" in done.stderr
    assert "no such documents file" not in done.stderr


def test_serve_on_a_busy_port_fails_before_loading_the_model(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # torch absent: had serve loaded the model first, it would die on `import torch` instead
        done = cli("serve", "-m", "/no/such/model", "--port", str(port), absent=HEAVY)
    assert done.code == 3, done.stderr
    assert done.error_lines == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (is another server running there?)"
    ]
