"""Long documents: cut a document's text into token windows that fit the model next to its query.

Everything here works on text and token offsets, so the windows are ordinary documents for any family:
a window is the exact substring of the document that a run of its tokens covers. Adjacent windows overlap
by ``overlap`` tokens so a relevant sentence cut by one border is whole in the next window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tokenizers import Tokenizer

Side = Literal["right", "left"]
Offsets = list[tuple[int, int]]

# Re-tokenising a window can differ from the original tokens by one at its borders (merges across the cut).
BORDER_SLACK = 2


@dataclass(frozen=True, slots=True)
class Split:
    """One document cut for the model: its windows (one, when the document fits) and what was lost.

    ``tokens`` is the document's length in tokens (without special tokens); ``kept`` how many of them the
    windows cover; ``dropped`` is true when part of the document is scored by no window.
    """

    windows: tuple[str, ...]
    tokens: int
    kept: int

    @property
    def dropped(self) -> bool:
        return self.kept < self.tokens


def token_offsets(backend: Tokenizer, texts: Sequence[str]) -> list[Offsets]:
    """Character offsets of every token of each text (no special tokens)."""
    return [list(enc.offsets) for enc in backend.encode_batch(list(texts), add_special_tokens=False)]


def window_starts(n_tokens: int, window: int, overlap: int) -> list[int]:
    """Start positions of overlapping windows covering ``n_tokens`` tokens (the last one ends at the end)."""
    if window < 1:
        raise ValueError("window must be positive")
    if n_tokens <= window:
        return [0]
    stride = max(window - overlap, 1)
    starts = list(range(0, n_tokens - window, stride))
    starts.append(n_tokens - window)
    return starts


def default_overlap(window: int) -> int:
    """An eighth of the window (at most 64 tokens): enough to keep a sentence whole across a border."""
    return min(window // 8, 64)


def _span(text: str, offsets: Offsets, start: int, stop: int) -> str:
    return text[offsets[start][0] : offsets[stop - 1][1]]


def split_document(
    text: str,
    offsets: Offsets,
    window: int,
    *,
    max_tokens: int | None = None,
    max_chunks: int | None = None,
    overlap: int | None = None,
) -> Split:
    """Cut ``text`` into windows of at most ``window`` tokens.

    ``max_tokens`` first keeps only the document's first tokens (Cohere's ``max_tokens_per_doc``);
    ``max_chunks`` keeps only the first windows (Cohere's ``max_chunks_per_doc``).
    """
    total = len(offsets)
    usable = min(total, max_tokens) if max_tokens is not None else total
    if usable == total and total <= window:
        return Split((text,), total, total)
    if usable == 0:
        return Split(("",), total, 0)
    step = overlap if overlap is not None else default_overlap(window)
    starts = window_starts(usable, window, step)
    if max_chunks is not None:
        starts = starts[:max_chunks]
    windows = tuple(_span(text, offsets, start, min(start + window, usable)) for start in starts)
    kept = min(starts[-1] + window, usable)
    return Split(windows, total, kept)


def cut_document(text: str, offsets: Offsets, keep: int, side: Side = "right") -> str:
    """The part of ``text`` covered by its first (``right`` truncation) or last (``left``) ``keep`` tokens."""
    if len(offsets) <= keep:
        return text
    if keep <= 0:
        return ""
    if side == "left":
        return text[offsets[len(offsets) - keep][0] :]
    return text[: offsets[keep - 1][1]]


def fit_documents(
    backend: Tokenizer,
    documents: Sequence[str],
    budget: int,
    *,
    chunked: bool = False,
    side: Side = "right",
    max_tokens: int | None = None,
    max_chunks: int | None = None,
) -> list[Split]:
    """Make each document fit ``budget`` tokens: split it into windows (``chunked``) or cut it at ``side``.

    A cut document comes back with ``dropped`` set; whether that is allowed (truncation on) is the
    caller's decision.
    """
    budget = max(budget, 1)
    out = []
    for text, offsets in zip(documents, token_offsets(backend, documents), strict=True):
        if chunked:
            window = max(budget - BORDER_SLACK, 1)
            out.append(split_document(text, offsets, window, max_tokens=max_tokens, max_chunks=max_chunks))
        elif len(offsets) <= budget:
            out.append(Split((text,), len(offsets), len(offsets)))
        else:
            out.append(Split((cut_document(text, offsets, budget, side),), len(offsets), budget))
    return out
