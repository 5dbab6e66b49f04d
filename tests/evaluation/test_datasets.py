"""BEIR folders, TREC run files and JSONL pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankd.errors import InvalidInput
from rerankd.evaluation import load_beir, load_pairs_jsonl, load_trec_run, run_file_first_stage, write_trec_run
from tests.evaluation.conftest import CORPUS


def test_load_beir_keeps_judged_queries_with_a_relevant_document(beir_dir: Path) -> None:
    dataset = load_beir(beir_dir)
    assert dataset.name == "tiny-beir"
    assert list(dataset.queries) == ["q1", "q2", "q3", "q4", "q5", "q7"]  # q6 is not judged
    assert dataset.qrels["q1"] == {"d01": 2, "d02": 1, "d12": 0}  # header line skipped, grades kept
    assert len(dataset.corpus) == len(CORPUS)
    assert dataset.corpus["d05"] == "Berlin Berlin is the capital of Germany and its largest city."  # title + text
    assert list(load_beir(beir_dir, max_queries=2).queries) == ["q1", "q2"]


def test_load_beir_errors_name_the_problem(tmp_path: Path, beir_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="no such dataset folder"):
        load_beir(tmp_path / "missing")
    with pytest.raises(InvalidInput, match=r"corpus\.jsonl is missing"):
        load_beir(tmp_path)
    with pytest.raises(InvalidInput, match=r"qrels/dev\.tsv is missing"):
        load_beir(beir_dir, split="dev")


def test_trec_run_round_trip_and_first_stage_from_a_run_file(tmp_path: Path, beir_dir: Path) -> None:
    run = {"q1": {"d02": 1.5, "d01": 2.5, "nope": 9.0}, "q2": {"d03": 0.1}}
    path = tmp_path / "run.trec"
    write_trec_run(run, path)
    assert path.read_text().splitlines()[0] == "q1 Q0 nope 1 9.0 rerankd"
    assert load_trec_run(path) == run
    first = run_file_first_stage(path, load_beir(beir_dir), top_k=1)
    assert first["q1"] == {"d01": 2.5}  # "nope" is not in the corpus
    assert first["q2"] == {"d03": 0.1}
    assert first["q3"] == {}  # no candidates


def test_pairs_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "q", "document": "d"}\n\n{"query": "q", "text": "t"}\n', encoding="utf-8")
    assert [(p.query, p.document) for p in load_pairs_jsonl(path)] == [("q", "d"), ("q", "t")]
    path.write_text('{"query": "q"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="needs"):
        load_pairs_jsonl(path)


def test_missing_optional_dependency_names_the_extra() -> None:
    from rerankd.errors import MissingDependency
    from rerankd.evaluation.dependencies import import_eval_module

    with pytest.raises(MissingDependency, match=r"pip install 'rerankd\[eval\]'"):
        import_eval_module("no_such_package_for_rerankd.sub", "plotting")
