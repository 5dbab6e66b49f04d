"""What every first stage returns and the one method it has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rerankd.errors import InvalidInput
from rerankd.pipeline.documents import Document

MAX_K = 10_000


@dataclass(frozen=True)
class Candidate:
    """A first-stage hit: the document, its first-stage score and its 1-based rank in that stage."""

    document: Document
    score: float
    rank: int

    @property
    def id(self) -> str:
        return self.document.id


@runtime_checkable
class Retriever(Protocol):
    """A first stage: the best ``k`` documents for ``query`` that pass ``filters`` (see :mod:`.filters`)."""

    name: str

    def retrieve(self, query: str, k: int = 100, filters: dict[str, Any] | None = None) -> list[Candidate]: ...


def check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > MAX_K:
        raise InvalidInput(f"{name} must be an integer in 1..{MAX_K}, got {k!r}", param=name)
    return k


def check_query_text(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must be a non-empty string", param="query")
    return query


def ranked(scored: list[tuple[Document, float]]) -> list[Candidate]:
    """Candidates best first (ties by document id, so every run gives the same order)."""
    ordered = sorted(scored, key=lambda pair: (-pair[1], pair[0].id))
    return [Candidate(document, score, rank) for rank, (document, score) in enumerate(ordered, start=1)]
