"""One scoring call as data: per-call options, the encoded model inputs, and how to read their outputs.

:func:`prepare_pairs` / :func:`prepare_embed` turn checked inputs into a :class:`ScoringJob` (encoding, truncation
policy, long-document chunking); the synchronous path runs its items in planned batches, the server's scheduler
batches them together with other requests' items. Either way ``job.finish`` turns the raw outputs into one row per
input, so both paths share the same interpretation. :func:`primary_score` and :func:`ranking` are the one
definition of a row's score and of the order results are returned in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rerankd.chunking import Side
from rerankd.errors import InputTooLong, InvalidInput
from rerankd.families.base import BatchKey, CallOptions, Encoded, Kind

Finish = Callable[[torch.Tensor], torch.Tensor]
_MAX_LISTED = 10


@dataclass(frozen=True)
class ScoreOptions:
    """Per-call scoring choices. ``None`` means the reranker's own setting.

    ``max_tokens_per_doc`` / ``max_chunks_per_doc`` turn on long-document chunking: each document is split
    into overlapping windows that fit the model next to its query, every window is scored, and the
    document's score is the best window's (Cohere's semantics). ``max_tokens_per_doc`` first keeps only a
    document's first tokens; ``max_chunks_per_doc`` keeps only its first windows. ``truncation_side="left"``
    keeps a document's end instead of its start; ``max_input_tokens`` caps query + document tokens below the
    model's limit (vLLM's ``truncate_prompt_tokens``).
    """

    instruction: str | None = None
    cutoff_layers: tuple[int, ...] | None = None
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_side: Side = "right"
    max_tokens_per_doc: int | None = None
    max_chunks_per_doc: int | None = None
    max_input_tokens: int | None = None
    # Family-specific choices that change the forward pass (carried into CallOptions): token compression
    # (bge-gemma2-lightweight) and the dense/sparse/multi-vector weights of bge-m3.
    compress_ratio: int | None = None
    compress_layers: tuple[int, ...] | None = None
    score_weights: tuple[float, ...] | None = None

    @property
    def chunked(self) -> bool:
        return self.max_tokens_per_doc is not None or self.max_chunks_per_doc is not None

    @property
    def reshapes_text(self) -> bool:
        """Whether documents must be cut or split as text before encoding (else the family truncates)."""
        return self.chunked or self.truncation_side == "left" or self.max_input_tokens is not None

    def check(self) -> None:
        for name in ("max_tokens_per_doc", "max_chunks_per_doc", "max_input_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}", param=name)
        if self.truncation_side not in ("right", "left"):
            raise InvalidInput("truncation_side must be 'right' or 'left'", param="truncation_side")


DEFAULT_OPTIONS = ScoreOptions()


@dataclass(frozen=True)
class ScoringJob:
    """Encoded model inputs for one call and how to read their outputs.

    ``finish`` maps the raw forward outputs of ``items`` (in item order) to one row per input (pair or
    text): normalised scores, the best chunk per document, cosines or embeddings. ``tokens`` is the number
    of model tokens each input used; ``cut`` lists the inputs that were truncated or only partly scored
    (chunking caps), and ``warnings`` says so in words; ``notices`` are warnings about the call as a whole
    (e.g. a truncated query), also part of ``warnings``.
    """

    items: list[Encoded]
    kind: Kind
    call: CallOptions
    tokens: list[int]
    cut: list[int]
    warnings: list[str]
    finish: Finish
    notices: tuple[str, ...] = ()

    @property
    def key(self) -> BatchKey:
        """Jobs with equal keys may share a forward pass."""
        return (self.kind, self.call)


def identity(raw: torch.Tensor) -> torch.Tensor:
    return raw


def score_finisher(owners: list[int], n_inputs: int, squash: bool) -> Finish:
    """Raw ``(items, outputs)`` logits -> ``(inputs, outputs)`` float64 scores, the best item per input."""
    identity = owners == list(range(n_inputs))
    index = torch.tensor(owners, dtype=torch.long)

    def finish(raw: torch.Tensor) -> torch.Tensor:
        scores = raw.double().reshape(raw.shape[0], -1)
        if squash:
            scores = torch.sigmoid(scores)
        if identity:
            return scores
        out = scores.new_full((n_inputs, scores.shape[1]), float("-inf"))
        return out.scatter_reduce(0, index.unsqueeze(1).expand_as(scores), scores, reduce="amax")

    return finish


def cosine_finisher(n_queries: int, query_rows: list[int], owners: list[int], n_inputs: int) -> Finish:
    """Raw ``[query vectors; document-window vectors]`` -> ``(pairs, 1)`` cosines, the best window per pair."""
    rows = torch.tensor(query_rows, dtype=torch.long)
    inner = score_finisher(owners, n_inputs, squash=False)

    def finish(raw: torch.Tensor) -> torch.Tensor:
        cosines = (raw[rows] * raw[n_queries:]).sum(dim=-1, keepdim=True)
        return inner(cosines)

    return finish


def too_long(index: int, tokens: int, limit: int, param: str = "documents") -> InputTooLong:
    return InputTooLong(
        f"input {index} has {tokens} tokens, over the model's limit of {limit}; shorten it or enable truncation",
        index=index,
        tokens=tokens,
        limit=limit,
        param=param,
    )


def _listed(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    return shown + (f" and {len(indices) - _MAX_LISTED} more" if len(indices) > _MAX_LISTED else "")


def describe_cut(indices: list[int], *, chunked: bool, limit: int, what: str = "document") -> list[str]:
    """The warnings for inputs that were truncated (or, with chunking, only partly scored)."""
    if not indices:
        return []
    if chunked:
        return [
            f"{len(indices)} {what}(s) only partly scored (max_tokens_per_doc / max_chunks_per_doc): "
            f"{what} {_listed(indices)}"
        ]
    return [f"{len(indices)} {what}(s) truncated to the model's limit of {limit} tokens: {what} {_listed(indices)}"]


# ---------------------------------------------------------------------------------------------- scores and order
def primary_score(row: Sequence[float]) -> float:
    """The score a row is ranked by: its only column, or the deepest layer's for per-layer rows."""
    return float(row[-1])


def ranking(scores: Sequence[float], top_n: int | None = None) -> list[int]:
    """Input positions best first (ties keep input order), cut to ``top_n`` (None or 0: all)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order[:top_n] if top_n else order


def call_options(instruction: str | None, cutoff_layers: Sequence[int] | int | None) -> CallOptions:
    """Checked per-call options (cutoff layers sorted and de-duplicated)."""
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInput("instruction must be a string", param="instruction")
    layers = None
    if cutoff_layers is not None:
        if isinstance(cutoff_layers, int):
            cutoff_layers = [cutoff_layers]
        if not cutoff_layers or not all(isinstance(x, int) and not isinstance(x, bool) for x in cutoff_layers):
            raise InvalidInput("cutoff_layers must be a non-empty list of integers", param="cutoff_layers")
        layers = tuple(sorted(set(cutoff_layers)))
    return CallOptions(instruction=instruction, cutoff_layers=layers)
