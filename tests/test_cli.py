"""`rerankd rank` and `rerankd models` end to end (in-process with CliRunner, and once as a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app

REPO = Path(__file__).resolve().parents[1]
PANDA = "The giant panda is a bear species endemic to China."


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _json(output: str) -> dict:
    return json.loads(output[output.index("{") :])


def test_rank_txt_file_as_json(runner: CliRunner, tmp_path: Path) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text(f"hi\n\n{PANDA}\nParis is the capital of France.\n")
    result = runner.invoke(
        app, ["rank", "-m", "all-MiniLM-L6-v2", "-q", "what is panda?", "--docs", str(docs), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = _json(result.output)
    assert payload["family"] == "bi-encoder"
    assert payload["results"][0]["index"] == 1  # blank lines are skipped: panda is document 1
    assert payload["results"][0]["document"] == PANDA
    assert payload["results"][0]["score"] == pytest.approx(0.7633221, abs=1e-5)


def test_rank_jsonl_from_stdin_with_top_n(runner: CliRunner) -> None:
    lines = "\n".join(json.dumps({"text": t}) for t in ["hi", PANDA, "bamboo forests"])
    args = ["rank", "-m", "all-MiniLM-L6-v2", "-q", "what is panda?", "--top-n", "2", "--json"]
    result = runner.invoke(app, args, input=lines)
    assert result.exit_code == 0, result.output
    results = _json(result.output)["results"]
    assert len(results) == 2 and results[0]["index"] == 1


def test_rank_table_output(runner: CliRunner, tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": PANDA}) + "\n" + json.dumps("hi") + "\n")
    result = runner.invoke(app, ["rank", "-m", "all-MiniLM-L6-v2", "-q", "what is panda?", "-d", str(docs)])
    assert result.exit_code == 0, result.output
    assert "0.7633" in result.output and "bi-encoder" in result.output


def test_rank_raw_scores_and_cross_encoder(runner: CliRunner, bert_ce: Path, tmp_path: Path) -> None:
    docs = tmp_path / "d.txt"
    docs.write_text("hello world\nThe giant panda is a bear species of china.\n")
    base = ["rank", "-m", str(bert_ce), "-q", "what is the giant panda?", "-d", str(docs), "--json"]
    raw = _json(runner.invoke(app, [*base, "--raw"]).output)["results"]
    norm = _json(runner.invoke(app, base).output)["results"]
    assert {r["index"]: round(r["score"], 4) for r in raw} == {0: -0.9234, 1: -0.6565}
    assert all(0 < r["score"] < 1 for r in norm)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-d", "/no/such/file.txt"], None, "no such documents file"),
        (["-d", "-"], "{not json\n", "line 1 is not valid JSON"),
        (["-d", "-"], '{"title": "x"}\n', 'needs a "text" string field'),
        (["-d", "-"], "\n\n", "no documents to rank"),
        (["-d", "-", "-m", "/no/such/model"], "a\n", "neither a local folder"),
        (["-d", "-", "--device", "gpu"], "a\n", "unknown device"),
    ],
)
def test_rank_errors_are_clear(runner: CliRunner, args: list[str], stdin: str | None, message: str) -> None:
    env = {"HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["rank", "-q", "q", *args], input=stdin, env=env)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_models_lists_families(runner: CliRunner) -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "cross-encoder" in result.output and "bi-encoder" in result.output


def test_settings_come_from_env(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["rank", "-q", "what is panda?", "--json"],
        input=f"hi\n{PANDA}\n",
        env={"RERANKD_MODEL": "all-MiniLM-L6-v2", "RERANKD_DTYPE": "float32"},
    )
    assert result.exit_code == 0, result.output
    assert _json(result.output)["model"] == "all-MiniLM-L6-v2"


def test_installed_entry_point_runs_the_readme_demo() -> None:
    exe = Path(sys.executable).with_name("rerankd")
    command = [str(exe), "rank", "--model", "all-MiniLM-L6-v2", "--query", "what is panda?"]
    command += ["--docs", str(REPO / "examples" / "smoke_panda.txt"), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    results = _json(done.stdout)["results"]
    assert results[0]["document"].startswith("The giant panda")
    hi = next(r for r in results if r["document"] == "hi")
    assert results[0]["score"] - hi["score"] > 0.4
    assert "Loading weights" not in done.stderr  # the CLI owns the terminal


def test_serve_refuses_to_start_without_a_key_where_one_is_required(runner: CliRunner) -> None:
    env = {"RERANKD_REQUIRE_API_KEY": "1", "RERANKD_MODEL": "/nonexistent/model"}
    result = runner.invoke(app, ["serve", "--port", "0"], env=env)
    assert result.exit_code == 2
    assert "no API key" in result.output and "--allow-unauthenticated" in result.output


@pytest.mark.parametrize(
    ("host", "keys", "allow", "require", "expected"),
    [
        ("127.0.0.1", (), False, False, None),
        ("::1", (), False, False, None),
        ("localhost", (), False, False, None),
        ("0.0.0.0", (), False, False, "warn"),
        ("10.1.2.3", (), False, False, "warn"),
        ("0.0.0.0", ("k",), False, True, None),
        ("0.0.0.0", (), True, True, None),
        ("127.0.0.1", (), False, True, "fatal"),
    ],
)
def test_exposure_rules(host: str, keys: tuple[str, ...], allow: bool, require: bool, expected: str | None) -> None:
    from rerankd.settings import Settings

    settings = Settings(host=host, api_key=keys, allow_unauthenticated=allow, require_api_key=require)
    problem = settings.exposure_problem()
    assert (None if problem is None else ("fatal" if problem[1] else "warn")) == expected
