"""Fixtures for the evaluation tests: a small BEIR-layout dataset written in the test session and the real
all-MiniLM-L6-v2 bi-encoder, loaded once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rerankd import Reranker

CORPUS: dict[str, tuple[str, str]] = {
    "d01": (
        "Giant panda",
        "The giant panda is a bear native to south central China. It eats bamboo almost exclusively.",
    ),
    "d02": (
        "Red panda",
        "The red panda is a small mammal of the eastern Himalayas with reddish-brown fur and a ringed tail.",
    ),
    "d03": ("Paris", "Paris is the capital and largest city of France, known for the Eiffel Tower and the Louvre."),
    "d04": (
        "Lyon",
        "Lyon is the third-largest city of France, famous for its cuisine and its history of silk weaving.",
    ),
    "d05": ("Berlin", "Berlin is the capital of Germany and its largest city."),
    "d06": (
        "Machine learning",
        "Machine learning is a branch of artificial intelligence that builds systems which learn from data.",
    ),
    "d07": (
        "Deep learning",
        "Deep learning trains neural networks with many layers to learn representations from large datasets.",
    ),
    "d08": ("Photosynthesis", "Photosynthesis lets plants convert light energy into chemical energy stored in sugars."),
    "d09": ("Volcano", "A volcano is an opening in the crust of the Earth through which lava, ash and gases escape."),
    "d10": ("Coffee", "Coffee is a brewed drink prepared from roasted coffee beans, the seeds of the Coffea plant."),
    "d11": (
        "Learning to cook",
        "Learning to cook at home saves money, and a machine like a slow cooker makes it easier.",
    ),
    "d12": ("Panda Express", "Panda Express is a fast food restaurant chain that serves American Chinese cuisine."),
}
QUERIES: dict[str, str] = {
    "q1": "what is panda?",
    "q2": "what is the capital of France?",
    "q3": "Tell me about machine learning",
    "q4": "How do plants make food from sunlight?",
    "q5": "Coffee is a brewed drink prepared from roasted coffee beans",
    "q6": "a query nobody judged",
    "q7": "Which city is the seat of the French government?",
}
QRELS: list[tuple[str, str, int]] = [
    ("q1", "d01", 2),
    ("q1", "d02", 1),
    ("q1", "d12", 0),
    ("q2", "d03", 2),
    ("q2", "d04", 0),
    ("q2", "d05", 0),
    ("q3", "d06", 2),
    ("q3", "d07", 1),
    ("q3", "d11", 0),
    ("q4", "d08", 2),
    ("q5", "d10", 1),
    ("q7", "d03", 1),
]


def write_beir(folder: Path) -> Path:
    """Write the small dataset in BEIR layout (qrels/test.tsv with a header line)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": doc_id, "title": title, "text": text} for doc_id, (title, text) in CORPUS.items()]
    queries = [{"_id": qid, "text": text} for qid, text in QUERIES.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries), encoding="utf-8")
    lines = ["query-id\tcorpus-id\tscore\n"] + [f"{q}\t{d}\t{g}\n" for q, d, g in QRELS]
    (folder / "qrels" / "test.tsv").write_text("".join(lines), encoding="utf-8")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared machine, two threads contending with other processes make a
    MiniLM forward pass ~15x slower. Restored after each module so other test folders are unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def beir_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny-beir")


@pytest.fixture(scope="session")
def minilm() -> Reranker:
    from rerankd import Reranker

    return Reranker.from_pretrained("all-MiniLM-L6-v2")
