"""How much two rankings of the same documents agree: what shadow scoring records for every shadowed request.

All functions take rankings as lists of document indices, best first, over the same documents.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def kendall_tau(first: Sequence[int], second: Sequence[int]) -> float:
    """Kendall's tau-a between two full rankings of the same items: 1 identical, -1 reversed."""
    n = len(first)
    if n < 2:
        return 1.0
    position = {item: rank for rank, item in enumerate(second)}
    mapped = np.array([position[item] for item in first])
    signs = np.sign(mapped[None, :] - mapped[:, None])  # +1 where the pair (i < j) keeps its order
    return float(np.triu(signs, k=1).sum() / (n * (n - 1) / 2))


def top_k_overlap(first: Sequence[int], second: Sequence[int], k: int) -> float:
    """Share of the top ``k`` items the two rankings have in common (1.0 when both top-k sets are equal)."""
    depth = min(k, len(first), len(second))
    if depth == 0:
        return 1.0
    return len(set(first[:depth]) & set(second[:depth])) / depth


def rank_biased_overlap(first: Sequence[int], second: Sequence[int], p: float = 0.9) -> float:
    """Rank-biased overlap (Webber et al., 2010), extrapolated to the full (finite, equal-length) rankings: the
    weighted average of the top-d overlaps with weights ``(1-p) p^(d-1)``; 1.0 for identical rankings."""
    depth = min(len(first), len(second))
    if depth == 0:
        return 1.0
    seen_first: set[int] = set()
    seen_second: set[int] = set()
    overlap = 0
    total = 0.0
    for d in range(1, depth + 1):
        a, b = first[d - 1], second[d - 1]
        if a == b:
            overlap += 1
        else:
            overlap += (a in seen_second) + (b in seen_first)
        seen_first.add(a)
        seen_second.add(b)
        total += (overlap / d) * p ** (d - 1)
    return (1 - p) * total + (overlap / depth) * p**depth


def agreement(served: Sequence[int], candidate: Sequence[int]) -> dict[str, float]:
    """Every agreement measure shadow scoring exports."""
    return {
        "kendall_tau": kendall_tau(served, candidate),
        "top1_overlap": top_k_overlap(served, candidate, 1),
        "top5_overlap": top_k_overlap(served, candidate, 5),
        "rbo": rank_biased_overlap(served, candidate),
    }
