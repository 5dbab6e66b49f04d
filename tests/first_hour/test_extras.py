"""Every command with each optional extra made absent (hidden from the import system, as if never installed): a
command that needs the extra fails with ONE line naming ``pip install 'rerankd[extra]'`` and exit status 3 (before
any model loads where the flags say it is needed), never a traceback; one that does not need it still works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankd.cli.extras import EXTRAS, missing_extra
from tests.first_hour.conftest import Cli
from tests.first_hour.test_startup import commands

ALL_EXTRAS = sorted({module for modules in EXTRAS.values() for module in modules} | {"redis"})
MODEL = "{model}"  # replaced by the tiny cross-encoder's folder

# (extra made absent, the modules hidden, the command line)
CASES: list[tuple[str, tuple[str, ...], list[str]]] = [
    ("server", EXTRAS["server"], ["serve", "-m", MODEL, "--port", "0"]),
    ("server", ("redis",), ["serve", "-m", MODEL, "--port", "0", "--cache", "redis://127.0.0.1:1/0"]),
    ("search", EXTRAS["search"], ["serve", "-m", MODEL, "--port", "0", "--index", "{tmp}/index"]),
    ("onnx", EXTRAS["onnx"], ["export", MODEL, "{tmp}/exported", "--onnx"]),
    ("onnx", ("onnx",), ["export", MODEL, "{tmp}/exported", "--onnx"]),  # onnxruntime alone is not enough
    ("onnx", EXTRAS["onnx"], ["rank", "-m", MODEL, "-q", "q", "-d", "{tmp}/docs.txt", "--backend", "onnx"]),
    ("onnx", EXTRAS["onnx"], ["bench", MODEL, "--backend", "onnx", "--dtype", "float32"]),
    ("onnx", EXTRAS["onnx"], ["smoke", MODEL, "--backend", "onnx"]),
    ("eval", EXTRAS["eval"], ["compare", "-m", MODEL]),
    ("eval", ("matplotlib",), ["compare", "-m", MODEL, "--plot", "{tmp}/p.png"]),
    ("eval", EXTRAS["eval"], ["eval", "{tmp}/beir", "-m", MODEL]),
    ("eval", EXTRAS["search"], ["eval", "{tmp}/beir", "-m", MODEL]),  # its BM25 first stage
    ("search", EXTRAS["search"], ["index", "{tmp}/corpus.jsonl", "-o", "{tmp}/index"]),
    ("search", EXTRAS["search"], ["search", "giant panda", "--index", "{index}", "-m", MODEL]),
    ("search", ("tantivy",), ["search", "giant panda", "--index", "{index}", "--no-rerank"]),
    ("search", ("tantivy",), ["search", "giant panda", "--index", "{tmp}/no-index", "--no-rerank"]),  # extra first
    ("batch", EXTRAS["batch"], ["batch", "{tmp}/pairs.jsonl", "-o", "{tmp}/out.parquet", "-m", MODEL]),
    ("batch", EXTRAS["batch"], ["batch", "{tmp}/pairs.parquet", "-o", "{tmp}/out.jsonl", "-m", MODEL]),
    ("ray", EXTRAS["ray"], ["batch", "{tmp}/pairs.jsonl", "-o", "{tmp}/out2.jsonl", "-m", MODEL, "--ray", "local"]),
    ("ray", EXTRAS["ray"], ["serve", "-m", MODEL, "--port", "0", "--ray", "local"]),
    ("modelscope", EXTRAS["modelscope"], ["rank", "-m", "modelscope:acme/x", "-q", "q", "-d", "{tmp}/docs.txt"]),
]


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "docs.txt").write_text("hello world\nThe giant panda is a bear species of china.\n")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"query": "q", "document": "d"}) + "\n")
    (tmp_path / "pairs.parquet").write_bytes(b"PAR1")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"id": "1", "text": "hello"}) + "\n")
    return tmp_path


@pytest.fixture(scope="module")
def search_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real BM25 index (built here, where the search extra is installed) for `rerankd search` to open without it."""
    from rerankd.pipeline import FieldMap, IndexConfig, IndexWriter, read_corpus

    folder = tmp_path_factory.mktemp("search") / "index"
    corpus = folder.with_name("corpus.jsonl")
    corpus.write_text(json.dumps({"id": "1", "text": "The giant panda is a bear species of China."}) + "\n")
    with IndexWriter(folder, IndexConfig(language="english")) as writer:
        writer.upsert(read_corpus(corpus, FieldMap()))
    return folder


@pytest.mark.parametrize(("extra", "hidden", "args"), CASES, ids=[f"{c[0]}-{c[2][0]}-{i}" for i, c in enumerate(CASES)])
def test_a_missing_extra_is_one_line_naming_it(
    cli: Cli, bert_ce: Path, files: Path, search_index: Path, extra: str, hidden: tuple[str, ...], args: list[str]
) -> None:
    argv = [arg.replace(MODEL, str(bert_ce)).replace("{tmp}", str(files)).replace("{index}", str(search_index))
            for arg in args]  # fmt: skip
    done = cli(*argv, absent=hidden, env={"HF_HUB_OFFLINE": "1"})
    assert done.code == 3, done.stderr
    errors = [line for line in done.error_lines if line.startswith("error:")]
    assert len(errors) == 1 and errors == done.error_lines[-1:], done.stderr
    assert f"pip install 'rerankd[{extra}]'" in errors[0]
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr


def test_every_command_helps_with_every_extra_absent(cli: Cli) -> None:
    for name in commands():
        done = cli(name, "--help", absent=ALL_EXTRAS)
        assert done.code == 0, (name, done.stderr)


def test_core_commands_work_with_every_extra_absent(cli: Cli, bert_ce: Path, files: Path) -> None:
    args = ["rank", "-m", str(bert_ce), "-q", "what is the giant panda?", "-d", f"{files}/docs.txt", "--json", "--raw"]
    done = cli(*args, absent=ALL_EXTRAS, env={"HF_HUB_OFFLINE": "1"})
    assert done.code == 0, done.stderr
    scores = {r["index"]: round(r["score"], 4) for r in json.loads(done.stdout)["results"]}
    assert scores == {0: -0.9234, 1: -0.6565}
    jsonl = cli("batch", f"{files}/pairs.jsonl", "-o", f"{files}/o.jsonl", "-m", str(bert_ce), absent=ALL_EXTRAS)
    assert jsonl.code == 0, jsonl.stderr
    assert len((files / "o.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("module", "hint"),
    [("uvicorn.config", "rerankd[server]"), ("onnx", "rerankd[onnx]"), ("scipy.stats", "rerankd[eval]"),
     ("redis.asyncio", "rerankd[server]"), ("ray", "rerankd[ray]"), ("tantivy", "rerankd[search]")],
)  # fmt: skip
def test_a_stray_import_error_still_names_the_extra(module: str, hint: str) -> None:
    error = missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert error is not None and f"pip install '{hint}'" in error.message and error.code == "missing_dependency"


def test_an_import_error_of_a_core_package_is_not_disguised() -> None:
    assert missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch")) is None
