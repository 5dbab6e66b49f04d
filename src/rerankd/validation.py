"""Input checks shared by the library and every front end; each failure is a typed, actionable error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NewType

from rerankd.errors import EmptyInput, InvalidInput

# Inputs that passed these checks: the scoring code takes only these, so every input is validated exactly once,
# by whichever front end received it (the library's methods, or a server dialect).
CheckedPairs = NewType("CheckedPairs", list[tuple[str, str]])
CheckedTexts = NewType("CheckedTexts", list[str])


def check_query(query: Any, param: str = "query") -> str:
    if not isinstance(query, str):
        raise InvalidInput(f"{param} must be a string, got {type(query).__name__}", param=param)
    if not query.strip():
        raise EmptyInput(f"{param} must not be empty", param=param)
    return query


def check_texts(texts: Any, param: str = "documents") -> CheckedTexts:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInput(f"{param} must be a list of strings", param=param)
    if len(texts) == 0:
        raise EmptyInput(f"{param} must not be empty", param=param)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"{param}[{index}] must be a string, got {type(text).__name__}", param=param)
    return CheckedTexts(list(texts))


def ranking_pairs(query: Any, documents: Any, param: str = "documents") -> CheckedPairs:
    """One query against many documents, checked."""
    checked = check_query(query)
    return CheckedPairs([(checked, document) for document in check_texts(documents, param=param)])


def check_pairs(pairs: Any) -> CheckedPairs:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise InvalidInput("pairs must be a non-empty list of (query, document) pairs", param="pairs")
    out = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInput(f"pairs[{index}] must be a (query, document) pair", param="pairs")
        query, document = pair
        check_query(query, param=f"pairs[{index}][0]")
        if not isinstance(document, str):
            raise InvalidInput(f"pairs[{index}][1] must be a string, got {type(document).__name__}", param="pairs")
        out.append((query, document))
    return CheckedPairs(out)


def check_top_n(top_n: Any) -> int | None:
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InvalidInput(f"top_n must be a positive integer or None, got {top_n!r}", param="top_n")
    return top_n
