"""A folder holding only an ONNX graph (what `rerankd export --onnx` writes) loads with the ONNX backend by itself,
and the export's closing hint shows the CLI as well as the library call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.first_hour.conftest import Cli
from tests.first_hour.test_hub_offline import PINNED_RAW, QUERY


def test_an_exported_folder_loads_with_onnx_by_itself(cli: Cli, bert_ce: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx-export"
    exported = cli("export", "--onnx", str(bert_ce), str(out), env={"HF_HUB_OFFLINE": "1"})
    assert exported.code == 0, exported.stderr
    assert not any(out.glob("*.safetensors")) and (out / "model.onnx").is_file()
    assert f'CLI:    rerankd rank -m {out} -q "your query" -d docs.txt' in exported.stdout
    assert f'Python: Reranker.from_pretrained("{out}")' in exported.stdout

    docs = tmp_path / "docs.txt"
    docs.write_text("hello world\nThe giant panda is a bear species of china.\n")
    done = cli("rank", "-m", str(out), "-q", QUERY, "-d", str(docs), "--json", "--raw", env={"HF_HUB_OFFLINE": "1"})
    assert done.code == 0, done.stderr
    assert done.error_lines == []  # no "no safetensors weights; loading pickle weights", no traceback
    scores = {r["index"]: r["score"] for r in json.loads(done.stdout)["results"]}
    assert scores == pytest.approx(PINNED_RAW, abs=2e-4)  # the torch model's scores, from the graph

    info = cli(python=f"from rerankd import Reranker; i = Reranker.from_pretrained({str(out)!r}).info; "
                      "print(i.backend, i.dtype)")  # fmt: skip
    assert info.stdout.split() == ["onnx", "float32"], info.stderr
