"""Several outputs per text from two-tower models (bge-m3: dense, sparse, multi-vector; ColBERT: multi-vector).

``Reranker.embed`` returns one dense vector per text from bi-encoders; :func:`embed_outputs` is its counterpart for
families that declare ``Capabilities.text_outputs``, with the outputs asked for:

    >>> out = embed_outputs(reranker, ["a text"], role="document", output=("dense", "sparse", "multi_vector"))
    >>> out.dense.shape, out.sparse[0], out.multi_vector[0].shape   # (1, dim), {token_id: weight}, (tokens, dim)

Texts are checked and truncated as for scoring (``max_length`` / ``query_max_length``); outputs are float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rerankd.errors import InputTooLong, InvalidInput
from rerankd.families.base import Role
from rerankd.families.late_interaction import MultiOutputEncoder
from rerankd.reranker import Reranker
from rerankd.validation import check_texts

Output = Literal["dense", "sparse", "multi_vector"]
OUTPUTS: tuple[Output, ...] = ("dense", "sparse", "multi_vector")
_SLICE = 64


@dataclass(frozen=True)
class EmbeddingOutputs:
    """Per text, in input order: ``dense`` ``(n, dim)``; ``sparse`` token id -> weight; ``multi_vector`` one
    ``(tokens, dim)`` array each; ``tokens`` the model tokens each text used. Outputs not asked for are None."""

    dense: np.ndarray | None
    sparse: list[dict[int, float]] | None
    multi_vector: list[np.ndarray] | None
    tokens: list[int]
    truncated: list[int]


def check_outputs(family: object, output: Sequence[str]) -> tuple[Output, ...]:
    """The outputs asked for, checked against what the family produces."""
    asked = tuple(dict.fromkeys(output))
    offered = tuple(getattr(family, "outputs", ()))
    unknown = [name for name in asked if name not in OUTPUTS]
    missing = [name for name in asked if name in OUTPUTS and name not in offered]
    if not asked or unknown or missing:
        raise InvalidInput(
            f"output {list(output)} invalid: this model gives {list(offered) or ['dense (Reranker.embed)']}",
            param="output",
        )
    return asked  # type: ignore[return-value]


def embed_outputs(
    reranker: Reranker, texts: Sequence[str], role: Role = "document", output: Sequence[str] = ("dense",)
) -> EmbeddingOutputs:
    """The requested outputs of ``texts`` (see the module docstring). Raises :class:`InvalidInput` for a model
    without such outputs, :class:`InputTooLong` for an over-long text when the reranker does not truncate."""
    family = reranker.family
    if not isinstance(family, MultiOutputEncoder):
        raise InvalidInput(f"{reranker.info.name} ({reranker.info.family}) has no sparse or multi-vector outputs")
    asked = check_outputs(family, output)
    checked = check_texts(texts, param="texts")
    items = family.encode_texts(list(checked), role)
    truncated = [i for i, item in enumerate(items) if item.truncated]
    if truncated and not reranker.truncate:
        first = items[truncated[0]]
        raise InputTooLong(
            f"input {truncated[0]} has {first.full_length} tokens, over the model's limit of {len(first)}",
            index=truncated[0],
            tokens=first.full_length,
            limit=len(first),
            param="texts",
        )
    vectors = [
        vector
        for start in range(0, len(items), _SLICE)
        for vector in family.encode_outputs(items[start : start + _SLICE])
    ]
    dense = sparse = multi = None
    if "dense" in asked:
        dense = np.stack([v.dense.numpy() for v in vectors if v.dense is not None]).astype(np.float32)
    if "sparse" in asked:
        sparse = [v.lexical_weights() for v in vectors]
    if "multi_vector" in asked:
        multi = [v.multi.numpy() for v in vectors if v.multi is not None]
    return EmbeddingOutputs(dense, sparse, multi, [len(item) for item in items], truncated)
