"""The ``Reranker`` facade: what users and every front end call.

It owns score interpretation (normalisation, ordering, ``top_n``) and truncation policy; families own model
math and the runtime owns batching.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from rerankd.errors import InputTooLong, InvalidInput
from rerankd.families.base import CallOptions, Embedder, Encoded, ModelOptions, PairScorer, Role
from rerankd.loading import Source, resolve_model
from rerankd.registry import Family, detect_family
from rerankd.runtime.devices import resolve_device, resolve_dtype
from rerankd.runtime.planner import TokenBudget
from rerankd.runtime.worker import run_planned
from rerankd.validation import check_pairs, check_query, check_texts, check_top_n

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RankedDocument:
    """One ranked result: ``index`` into the caller's documents, its score, and the document text.

    For families with several outputs per pair (layerwise rerankers with several cutoff layers),
    ``layer_scores`` holds one score per output and ``score`` is the last (deepest) one.
    """

    index: int
    score: float
    document: str
    layer_scores: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    family: str
    device: str
    dtype: str
    max_length: int
    load_seconds: float


def default_budget(device: torch.device) -> TokenBudget:
    """Token budget per forward pass: modest on CPU (cache-friendly), large on accelerators."""
    return TokenBudget(max_tokens=8192, max_batch_size=128) if device.type == "cpu" else TokenBudget(65536, 512)


class Reranker:
    """Score query-document pairs with any supported reranker family.

    Build one with :meth:`from_pretrained`. Methods are thread-safe (forward passes are serialised per
    model); the ``a*`` variants run them in a worker thread so an event loop stays responsive.
    """

    def __init__(
        self,
        family: Family,
        info: ModelInfo,
        *,
        normalize: bool = True,
        truncate: bool = True,
        budget: TokenBudget | None = None,
    ) -> None:
        self.family = family
        self.info = info
        self.normalize = normalize
        self.truncate = truncate
        self.budget = budget or TokenBudget()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        family: str | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        truncation: Literal["flag", "longest_first"] = "flag",
        pooling: Literal["auto", "cls", "mean", "max", "lasttoken", "mean_sqrt_len"] = "auto",
        query_instruction: str | None = None,
        normalize: bool = True,
        truncate: bool = True,
        batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
        source: Source = "auto",
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> Reranker:
        """Load a reranker from a local folder, a packaged model, the Hugging Face hub or ModelScope.

        ``normalize=True`` maps scores to [0, 1] with the model's declared activation (sigmoid unless its
        config declares Identity, as ms-marco cross-encoders do); ``False`` returns raw logits. Bi-encoders
        always return cosine similarity. ``truncate=False`` rejects over-long inputs with
        :class:`~rerankd.errors.InputTooLong` instead of truncating them.
        """
        started = time.perf_counter()
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        files = resolve_model(
            model, source=source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        spec = detect_family(files, family)
        options = ModelOptions(
            max_length=max_length,
            query_max_length=query_max_length,
            truncation=truncation,
            pooling=pooling,
            query_instruction=query_instruction,
        )
        loaded = spec.load(files, torch_device, torch_dtype, options, trust_remote_code)
        base = default_budget(torch_device)
        budget = TokenBudget(batch_tokens or base.max_tokens, max_batch_size or base.max_batch_size)
        info = ModelInfo(
            name=model,
            path=str(files.path),
            family=spec.name,
            device=str(torch_device),
            dtype=str(torch_dtype).removeprefix("torch."),
            max_length=loaded.limits.max_length,
            load_seconds=time.perf_counter() - started,
        )
        logger.info("loaded %s as %s on %s (%s)", model, spec.name, info.device, info.dtype)
        return cls(loaded, info, normalize=normalize, truncate=truncate, budget=budget)

    # ------------------------------------------------------------------ scoring
    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        instruction: str | None = None,
        cutoff_layers: Sequence[int] | None = None,
        progress: Progress | None = None,
    ) -> list[RankedDocument]:
        """Documents sorted by relevance to ``query``, best first (ties keep input order).

        ``instruction`` overrides an instruction-aware family's default instruction or prompt;
        ``cutoff_layers`` picks the exit layers of a layerwise family.
        """
        check_query(query)
        docs = check_texts(documents)
        limit = check_top_n(top_n)
        call = self._call(instruction, cutoff_layers)
        table = self._rank_scores(query, docs, call, progress)
        primary = [row[-1] for row in table]
        order = sorted(range(len(docs)), key=lambda i: -primary[i])
        ranked = [RankedDocument(i, primary[i], docs[i], tuple(table[i]) if len(table[i]) > 1 else None) for i in order]
        return ranked[:limit] if limit is not None else ranked

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        cutoff_layers: Sequence[int] | None = None,
        progress: Progress | None = None,
    ) -> list[Any]:
        """One score per (query, document) pair, in input order; a list of per-layer scores per pair when
        several ``cutoff_layers`` are asked for."""
        checked = check_pairs(pairs)
        if isinstance(self.family, Embedder):
            return self._cosine_pairs(checked, progress)
        call = self._call(instruction, cutoff_layers)
        table = self._finish(self._run(self._encode_grouped(checked, call), call, progress))
        return [row[0] if len(row) == 1 else row for row in table]

    def embed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        """L2-normalised embeddings ``(len(texts), dim)`` (bi-encoder families only)."""
        items = check_texts(texts, param="texts")
        if not isinstance(self.family, Embedder):
            raise InvalidInput(f"{self.info.name} is a {self.info.family}; embeddings need a bi-encoder model")
        encoded = self._checked(self.family.encode_texts(items, role))
        return self._run(encoded, CallOptions(), None).numpy()

    def count_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        """Model tokens each (query, document) input uses after truncation."""
        if isinstance(self.family, Embedder):
            encoded = self.family.encode_texts([query, *documents], "document")
            return [len(encoded[0]) + len(item) for item in encoded[1:]]
        return [len(item) for item in self.family.encode_pairs(query, documents, CallOptions())]

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RankedDocument]:
        return await asyncio.to_thread(self.rank, query, documents, top_n)

    async def ascore(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await asyncio.to_thread(self.score, pairs)

    async def aembed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts, role)

    # ------------------------------------------------------------------ internals
    def _call(self, instruction: str | None, cutoff_layers: Sequence[int] | None) -> CallOptions:
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

    def _rank_scores(
        self, query: str, docs: list[str], call: CallOptions, progress: Progress | None
    ) -> list[list[float]]:
        if isinstance(self.family, Embedder):
            return [[s] for s in self._cosine_pairs([(query, doc) for doc in docs], progress)]
        encoded = self._checked(self.family.encode_pairs(query, docs, call))
        return self._finish(self._run(encoded, call, progress))

    def _encode_grouped(self, pairs: list[tuple[str, str]], call: CallOptions) -> list[Encoded]:
        """Encode pairs one query at a time (families may share the query's prefix work)."""
        assert isinstance(self.family, PairScorer)
        groups: dict[str, list[int]] = {}
        for position, (query, _) in enumerate(pairs):
            groups.setdefault(query, []).append(position)
        encoded: list[Encoded | None] = [None] * len(pairs)
        for query, positions in groups.items():
            items = self.family.encode_pairs(query, [pairs[p][1] for p in positions], call)
            for position, item in zip(positions, items, strict=True):
                encoded[position] = item
        return self._checked([item for item in encoded if item is not None])

    def _cosine_pairs(self, pairs: list[tuple[str, str]], progress: Progress | None) -> list[float]:
        assert isinstance(self.family, Embedder)
        queries = list(dict.fromkeys(query for query, _ in pairs))
        docs = list(dict.fromkeys(doc for _, doc in pairs))
        encoded = self._checked(self.family.encode_texts(queries, "query")) + self._checked(
            self.family.encode_texts(docs, "document")
        )
        vectors = self._run(encoded, CallOptions(), progress)
        q_index = {q: i for i, q in enumerate(queries)}
        d_index = {d: len(queries) + i for i, d in enumerate(docs)}
        rows = torch.tensor([q_index[q] for q, _ in pairs])
        cols = torch.tensor([d_index[d] for _, d in pairs])
        return (vectors[rows] * vectors[cols]).sum(dim=-1).tolist()

    def _checked(self, encoded: list[Encoded]) -> list[Encoded]:
        if not self.truncate:
            limit = self.family.limits.max_length
            for index, item in enumerate(encoded):
                if item.truncated:
                    raise InputTooLong(
                        f"input {index} has {item.full_length} tokens, over the model's limit of {limit}; "
                        "shorten it or enable truncation",
                        index=index,
                        tokens=item.full_length,
                        limit=limit,
                    )
        return encoded

    def _run(self, encoded: list[Encoded], call: CallOptions, progress: Progress | None) -> torch.Tensor:
        family = self.family
        if isinstance(family, Embedder):
            forward = family.embed
        else:

            def forward(batch: Sequence[Encoded]) -> torch.Tensor:
                return family.score(batch, call)

        with self._lock:
            return run_planned(forward, encoded, family.limits, self.budget, progress)

    def _finish(self, raw: torch.Tensor) -> list[list[float]]:
        """Raw ``(n, outputs)`` scores -> rows of Python floats, normalised if asked."""
        assert isinstance(self.family, PairScorer)
        scores = raw.double().reshape(raw.shape[0], -1)
        if self.normalize and self.family.activation == "sigmoid":
            scores = torch.sigmoid(scores)
        rows: list[list[float]] = scores.tolist()
        return rows
