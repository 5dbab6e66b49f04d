"""What the two-tower scorers (bge-m3, ColBERT) share: one model input per pair that holds the query's and the
document's token ids side by side, and a bounded cache of encoded document vectors.

A two-tower scorer encodes the query and the document separately and compares their vectors (MaxSim, dot products).
To run through the same runtime as cross-encoders (token-budgeted batches, the server's scheduler), each pair is
one :class:`~rerankd.families.base.Encoded` whose first ``prefix_length`` ids are the query's encoding and whose
remaining ids are the document's. In :meth:`score` a family splits them again, encodes each distinct query of the
batch once, and takes document vectors from a :class:`VectorCache` when the same document (same token ids, same
model) was encoded before, so repeated documents are encoded once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

import torch

from rerankd.families.base import Encoded, Role

V = TypeVar("V")
DEFAULT_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Split:
    """A batch's pairs split into distinct queries and documents (ids), with each pair's indices into them."""

    queries: list[tuple[int, ...]]
    documents: list[tuple[int, ...]]
    query_of: list[int]
    document_of: list[int]


@dataclass(frozen=True)
class TextVectors:
    """What a two-tower model makes of one text (float32, CPU): a dense vector ``(dim,)``, lexical weights (unique
    token ``ids`` with ``weights`` > 0) and multi-vectors ``(tokens, dim)``; None where the model has no such output."""

    dense: torch.Tensor | None = None
    sparse_ids: torch.Tensor | None = None
    sparse_weights: torch.Tensor | None = None
    multi: torch.Tensor | None = None

    def lexical_weights(self) -> dict[int, float]:
        if self.sparse_ids is None or self.sparse_weights is None:
            return {}
        return dict(zip(self.sparse_ids.tolist(), self.sparse_weights.tolist(), strict=True))


@runtime_checkable
class MultiOutputEncoder(Protocol):
    """A family whose texts have several outputs (bge-m3: dense, sparse, multi-vector; ColBERT: multi-vector)."""

    outputs: tuple[str, ...]  # which of "dense", "sparse", "multi_vector" it produces

    def encode_texts(self, texts: Sequence[str], role: Role) -> list[Encoded]: ...

    def encode_outputs(self, items: Sequence[Encoded]) -> list[TextVectors]: ...


def join(query_ids: Sequence[int], document_ids: Sequence[int], full_length: int) -> Encoded:
    return Encoded(input_ids=(*query_ids, *document_ids), full_length=full_length, prefix_length=len(query_ids))


def split(batch: Sequence[Encoded]) -> Split:
    queries: dict[tuple[int, ...], int] = {}
    documents: dict[tuple[int, ...], int] = {}
    query_of, document_of = [], []
    for item in batch:
        query_of.append(queries.setdefault(item.input_ids[: item.prefix_length], len(queries)))
        document_of.append(documents.setdefault(item.input_ids[item.prefix_length :], len(documents)))
    return Split(list(queries), list(documents), query_of, document_of)


def tensor_bytes(value: object) -> int:
    """Bytes held by a tensor, or by the tensors in a tuple/list/dataclass of them."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    fields = getattr(value, "__dataclass_fields__", None)
    return sum(tensor_bytes(getattr(value, name)) for name in fields) if fields else 0


class VectorCache(Generic[V]):
    """A least-recently-used map from a document's token ids to its encoded vectors, bounded in bytes.

    One cache belongs to one loaded model, so the key (the ids, which already reflect the tokenizer and the length
    settings) plus the instance is the "document text + model fingerprint" key. ``max_bytes=0`` disables it.
    Thread-safe; ``hits``/``misses`` count lookups.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[int, ...], tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._version: object = None

    def __len__(self) -> int:
        return len(self._items)

    def get_many(
        self,
        keys: Sequence[tuple[int, ...]],
        compute: Callable[[list[tuple[int, ...]]], list[V]],
        version: object = None,
    ) -> list[V]:
        """Values for ``keys``: cached ones, and ``compute(missing keys)`` for the rest (then cached). A ``version``
        different from the last call's (e.g. the weights' dtype after the ``dtype="auto"`` guard cast them) empties
        the cache first: vectors of other weights are never served."""
        found: dict[tuple[int, ...], V] = {}
        with self._lock:
            if version != self._version:
                self._items.clear()
                self.bytes = 0
                self._version = version
            for key in keys:
                entry = self._items.get(key)
                if entry is not None:
                    self._items.move_to_end(key)
                    found[key] = entry[0]
            self.hits += len(found)
            missing = [key for key in dict.fromkeys(keys) if key not in found]
            self.misses += len(missing)
        if missing:
            for key, value in zip(missing, compute(missing), strict=True):
                found[key] = value
                self._put(key, value)
        return [found[key] for key in keys]

    def _put(self, key: tuple[int, ...], value: V) -> None:
        size = tensor_bytes(value) + 8 * len(key)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


def maxsim(query: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
    """``sum_i max_j <q_i, d_j>`` for ``(n, dim)`` query and ``(m, dim)`` document vectors (0 for no vectors)."""
    if document.shape[0] == 0 or query.shape[0] == 0:
        return query.new_zeros(())
    return (query @ document.T).max(dim=1).values.sum()
