"""Fixtures of the search pipeline tests: a small corpus with metadata, indexes built from it (BM25 only, and
BM25 + MiniLM vectors with an HNSW graph) and the real all-MiniLM-L6-v2 bi-encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rerankd.pipeline import Document, IndexConfig, IndexWriter

if TYPE_CHECKING:
    from rerankd import Reranker

ROWS: list[dict[str, Any]] = [
    {"id": "d01", "title": "Giant panda", "text": "The giant panda is a bear native to China. It eats bamboo.",
     "metadata": {"lang": "en", "year": 2001, "tags": ["animal", "china"]}},
    {"id": "d02", "title": "Red panda", "text": "The red panda is a small mammal of the eastern Himalayas.",
     "metadata": {"lang": "en", "year": 2012, "tags": ["animal"]}},
    {"id": "d03", "title": "Paris", "text": "Paris is the capital and largest city of France.",
     "metadata": {"lang": "en", "year": 2015, "tags": ["city"]}},
    {"id": "d04", "title": "Lyon", "text": "Lyon is a city of France famous for its cuisine.",
     "metadata": {"lang": "en", "year": 2018, "tags": ["city"]}},
    {"id": "d05", "title": "Berlin", "text": "Berlin is the capital of Germany and its largest city.",
     "metadata": {"lang": "en", "year": 2020, "tags": ["city"]}},
    {"id": "d06", "title": "Machine learning", "text": "Machine learning builds systems which learn from data.",
     "metadata": {"lang": "en", "year": 2021, "tags": ["science"]}},
    {"id": "d07", "title": "Photosynthesis", "text": "Plants convert sunlight into chemical energy stored in sugars.",
     "metadata": {"lang": "en", "year": 2009, "tags": ["science"]}},
    {"id": "d08", "title": "Coffee", "text": "Coffee is a brewed drink prepared from roasted coffee beans.",
     "metadata": {"lang": "en", "year": 2005, "tags": ["food"]}},
    {"id": "d09", "title": "Panda roux", "text": "Le panda roux vit dans les forêts de l'Himalaya.",
     "metadata": {"lang": "fr", "year": 2019, "tags": ["animal"]}},
    {"id": "d10", "title": "Panda Express", "text": "Panda Express is a fast food restaurant chain.",
     "metadata": {"lang": "en", "year": 2010, "tags": ["food"], "rating": 3.5}},
]  # fmt: skip
DOCUMENTS = [Document(r["id"], r["text"], r["title"], r["metadata"]) for r in ROWS]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), "utf-8")
    return path


@pytest.fixture(scope="session")
def encoder(minilm_path: Path) -> Reranker:
    from rerankd import Reranker

    return Reranker.from_pretrained(str(minilm_path), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def bm25_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bm25-index")
    with IndexWriter(root, IndexConfig(language="english")) as writer:
        writer.upsert(DOCUMENTS)
    return root


@pytest.fixture(scope="session")
def dense_index(tmp_path_factory: pytest.TempPathFactory, encoder: Reranker, minilm_path: Path) -> Path:
    root = tmp_path_factory.mktemp("dense-index")
    config = IndexConfig(language="english", dense_model=str(minilm_path), hnsw=True)
    with IndexWriter(root, config, encoder=encoder) as writer:
        writer.upsert(DOCUMENTS)
    return root
