"""Hub models without a network: a cached copy loads after one fast failed request (one log line), a missing model
fails at once naming every place looked at, and a failed fetch is ModelFetchFailed (exit 4), never ModelNotFound.
The hub is a closed local port or a local stand-in (tests/first_hour/hub_stub.py): never the internet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.first_hour.conftest import Cli, hf_cache_entry
from tests.first_hour.hub_stub import StubHub

HEAVY = ("torch", "transformers")
QUERY, DOCS = "what is the giant panda?", "hello world\nThe giant panda is a bear species of china.\n"
PINNED_RAW = {0: -0.9234, 1: -0.6565}  # bert_ce's raw scores for these two documents (tests/test_cli.py)


def rank(cli: Cli, model: str, tmp_path: Path, **kwargs: object) -> tuple[int, dict[int, float] | None, list[str]]:
    docs = tmp_path / "docs.txt"
    docs.write_text(DOCS)
    done = cli("rank", "-m", model, "-q", QUERY, "-d", str(docs), "--json", "--raw", **kwargs)
    scores = None
    if done.code == 0:
        payload = json.loads(done.stdout[done.stdout.index("{") :])
        scores = {r["index"]: round(r["score"], 4) for r in payload["results"]}
    return done.code, scores, done.error_lines


@pytest.fixture()
def cached(user_env: dict[str, str], bert_ce: Path) -> Path:
    """bert_ce in the new user's Hugging Face cache as ``acme/tiny-reranker``."""
    return hf_cache_entry(Path(user_env["HF_HOME"]), "acme/tiny-reranker", bert_ce)


@pytest.fixture()
def stub() -> Iterator[list[StubHub]]:
    hubs: list[StubHub] = []
    yield hubs
    for hub in hubs:
        hub.close()


def test_cached_model_loads_when_the_hub_is_unreachable(cli: Cli, cached: Path, tmp_path: Path) -> None:
    code, scores, lines = rank(cli, "acme/tiny-reranker", tmp_path)
    assert code == 0, lines
    assert scores == PINNED_RAW
    assert len(lines) == 1, lines  # one log line, no retries, nothing twice
    assert "the Hugging Face hub is unreachable" in lines[0] and "Connection refused" in lines[0]
    assert f"using the cached copy of acme/tiny-reranker in {cached.parents[2]}" in lines[0]


def test_cached_model_with_hub_offline_set_says_nothing(cli: Cli, cached: Path, tmp_path: Path) -> None:
    code, scores, lines = rank(cli, "acme/tiny-reranker", tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert (code, scores, lines) == (0, PINNED_RAW, [])


def test_missing_model_fails_at_once_naming_every_place(cli: Cli, user_env: dict[str, str], tmp_path: Path) -> None:
    code, _, lines = rank(cli, "acme/absent", tmp_path, absent=HEAVY)  # torch absent: fails before importing it
    assert code == 4, lines
    (line,) = lines
    cache = Path(user_env["HF_HOME"]) / "hub"
    assert line.startswith("error: could not fetch 'acme/absent': it is not a local folder, not in the Hugging")
    assert f"Hugging Face cache ({cache})" in line
    assert f"the hub ({user_env['HF_ENDPOINT']}) is unreachable: [Errno 111] Connection refused" in line
    assert "modelscope:<id>" in line and line.endswith("set HF_HUB_OFFLINE=1")


def test_missing_model_with_hub_offline_set_is_not_found(cli: Cli, user_env: dict[str, str], tmp_path: Path) -> None:
    code, _, lines = rank(cli, "acme/absent", tmp_path, absent=HEAVY, env={"HF_HUB_OFFLINE": "1"})
    assert code == 2
    cache = Path(user_env["HF_HOME"]) / "hub"
    assert lines == [
        f"error: 'acme/absent' is not a local folder and not in the Hugging Face cache ({cache}); the hub was not "
        "asked because HF_HUB_OFFLINE=1 (or local_files_only) is set: unset it to download the model (ModelScope "
        "models are named modelscope:<id>)"
    ]


LIBRARY = """
from rerankd import Reranker, ModelNotFound
from rerankd.errors import ModelFetchFailed
try:
    Reranker.from_pretrained({model!r}, device="cpu")
except ModelFetchFailed as exc:
    print("fetch-failed", exc.code, isinstance(exc, ModelNotFound))
except ModelNotFound as exc:
    print("not-found", exc.code)
else:
    print("loaded")
"""


def test_the_library_raises_model_fetch_failed_when_the_hub_is_down(cli: Cli) -> None:
    done = cli(python=LIBRARY.format(model="acme/absent"))
    assert done.stdout.split() == ["fetch-failed", "model_fetch_failed", "False"], done.stderr


def test_download_then_hub_down_uses_the_copy_after_one_request(
    cli: Cli, bert_ce: Path, stub: list[StubHub], tmp_path: Path
) -> None:
    online = StubHub("acme/tiny-reranker", bert_ce)
    stub.append(online)
    code, scores, lines = rank(cli, "acme/tiny-reranker", tmp_path, env={"HF_ENDPOINT": online.url})
    assert (code, scores) == (0, PINNED_RAW), lines
    assert any("/resolve/" in request for request in online.model_requests)  # really downloaded
    down = StubHub("acme/tiny-reranker", status=503)
    stub.append(down)
    code, scores, lines = rank(cli, "acme/tiny-reranker", tmp_path, env={"HF_ENDPOINT": down.url})
    assert (code, scores) == (0, PINNED_RAW), lines
    assert len(down.model_requests) == 1  # one fast failure: no retries, no second look-up by the loader
    assert len(lines) == 1 and "unreachable (HTTP 503 from the hub)" in lines[0]


@pytest.mark.parametrize(
    ("status", "error_code", "exit_code", "message"),
    [
        (404, "RepoNotFound", 2, "'acme/absent' is not a local folder and the Hugging Face hub has no acme/absent"),
        (404, "RevisionNotFound", 2, "the Hugging Face hub has no revision"),
        (403, "GatedRepo", 4, "acme/absent is gated: accept its terms on the hub and log in (HF_TOKEN)"),
        (401, None, 4, "could not fetch 'acme/absent' from the Hugging Face hub: HTTP 401 from the hub"),
        (503, None, 4, "is unreachable: HTTP 503 from the hub"),
    ],
)
def test_hub_answers_become_typed_errors(
    cli: Cli, stub: list[StubHub], tmp_path: Path, status: int, error_code: str | None, exit_code: int, message: str
) -> None:
    hub = StubHub("acme/absent", status=status, error_code=error_code)
    stub.append(hub)
    code, _, lines = rank(cli, "acme/absent", tmp_path, env={"HF_ENDPOINT": hub.url}, absent=HEAVY)
    assert code == exit_code, lines
    assert len(lines) == 1 and message in lines[0]
    assert len(hub.model_requests) == 1
