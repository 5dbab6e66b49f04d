from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rerankd import ModelNotFound, Reranker, UnsupportedModel
from rerankd.loading import resolve_model
from rerankd.registry import detect_family, family_names


def test_packaged_model_resolves_offline(minilm_path: Path) -> None:
    files = resolve_model("all-MiniLM-L6-v2")
    assert files.path == minilm_path.resolve()
    assert files.has_safetensors
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").path == files.path


def test_local_folder_and_detection(bert_ce: Path, minilm_path: Path) -> None:
    assert detect_family(resolve_model(str(bert_ce))).name == "cross-encoder"
    assert detect_family(resolve_model(str(minilm_path))).name == "bi-encoder"


def test_unknown_hub_id_offline_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound, match=r"not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        resolve_model("nobody/no-such-reranker", local_files_only=True)


def test_source_local_requires_a_folder() -> None:
    with pytest.raises(ModelNotFound, match="no model folder"):
        resolve_model("does/not/exist", source="local")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_unsupported_layout_lists_families(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(UnsupportedModel) as info:
        detect_family(resolve_model(str(tmp_path)))
    for name in family_names():
        assert name in info.value.message
    assert "--family" in info.value.message


def test_family_override(bert_ce: Path) -> None:
    files = resolve_model(str(bert_ce))
    assert detect_family(files, "cross-encoder").name == "cross-encoder"
    with pytest.raises(UnsupportedModel, match="unknown family 'nope'"):
        detect_family(files, "nope")


def test_multi_label_classifier_is_rejected(bert_ce: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nli"
    shutil.copytree(bert_ce, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b", "2": "c"}
    config.pop("num_labels", None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="3 labels"):
        Reranker.from_pretrained(str(folder), device="cpu")


def test_hub_id_resolves_from_the_local_cache_offline(bert_ce: Path, tmp_path: Path) -> None:
    """The real hub path (snapshot_download) with local_files_only reads the standard HF cache layout."""
    snapshot = tmp_path / "models--acme--tiny-reranker" / "snapshots" / "0123abcd"
    shutil.copytree(bert_ce, snapshot)
    (tmp_path / "models--acme--tiny-reranker" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-reranker" / "refs" / "main").write_text("0123abcd")
    files = resolve_model("acme/tiny-reranker", cache_dir=str(tmp_path), local_files_only=True)
    assert files.path == snapshot
    model = Reranker.from_pretrained("acme/tiny-reranker", cache_dir=str(tmp_path), local_files_only=True, device="cpu")
    assert model.info.family == "cross-encoder"


def test_modelscope_without_the_extra_names_it() -> None:
    import importlib.util

    from rerankd import MissingDependency

    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed")
    with pytest.raises(MissingDependency, match=r"rerankd\[modelscope\]"):
        resolve_model("modelscope:BAAI/bge-reranker-v2-m3")
