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
from rerankd.families.base import Embedder, Encoded, ModelOptions, PairScorer, Role
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
    """One ranked result: ``index`` into the caller's documents, its score, and the document text."""

    index: int
    score: float
    document: str


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
        self, query: str, documents: Sequence[str], top_n: int | None = None, progress: Progress | None = None
    ) -> list[RankedDocument]:
        """Documents sorted by relevance to ``query``, best first (ties keep input order)."""
        check_query(query)
        docs = check_texts(documents)
        limit = check_top_n(top_n)
        scores = self._rank_scores(query, docs, progress)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        ranked = [RankedDocument(index=i, score=scores[i], document=docs[i]) for i in order]
        return ranked[:limit] if limit is not None else ranked

    def score(self, pairs: Sequence[tuple[str, str]], progress: Progress | None = None) -> list[float]:
        """One score per (query, document) pair, in input order."""
        checked = check_pairs(pairs)
        if isinstance(self.family, Embedder):
            return self._cosine_pairs(checked, progress)
        encoded = self._encode_grouped(checked)
        return self._finish(self._run(encoded, progress))

    def embed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        """L2-normalised embeddings ``(len(texts), dim)`` (bi-encoder families only)."""
        items = check_texts(texts, param="texts")
        if not isinstance(self.family, Embedder):
            raise InvalidInput(f"{self.info.name} is a {self.info.family}; embeddings need a bi-encoder model")
        encoded = self._checked(self.family.encode_texts(items, role))
        return self._run(encoded, None).numpy()

    def count_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        """Model tokens each (query, document) input uses after truncation."""
        if isinstance(self.family, Embedder):
            encoded = self.family.encode_texts([query, *documents], "document")
            return [len(encoded[0]) + len(item) for item in encoded[1:]]
        return [len(item) for item in self.family.encode_pairs(query, documents)]

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RankedDocument]:
        return await asyncio.to_thread(self.rank, query, documents, top_n)

    async def ascore(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await asyncio.to_thread(self.score, pairs)

    async def aembed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts, role)

    # ------------------------------------------------------------------ internals
    def _rank_scores(self, query: str, docs: list[str], progress: Progress | None) -> list[float]:
        if isinstance(self.family, Embedder):
            return self._cosine_pairs([(query, doc) for doc in docs], progress)
        encoded = self._checked(self.family.encode_pairs(query, docs))
        return self._finish(self._run(encoded, progress))

    def _encode_grouped(self, pairs: list[tuple[str, str]]) -> list[Encoded]:
        """Encode pairs one query at a time (families may share the query's prefix work)."""
        assert isinstance(self.family, PairScorer)
        groups: dict[str, list[int]] = {}
        for position, (query, _) in enumerate(pairs):
            groups.setdefault(query, []).append(position)
        encoded: list[Encoded | None] = [None] * len(pairs)
        for query, positions in groups.items():
            items = self.family.encode_pairs(query, [pairs[p][1] for p in positions])
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
        vectors = self._run(encoded, progress)
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

    def _run(self, encoded: list[Encoded], progress: Progress | None) -> torch.Tensor:
        forward = self.family.embed if isinstance(self.family, Embedder) else self.family.score
        with self._lock:
            return run_planned(forward, encoded, self.family.limits, self.budget, progress)

    def _finish(self, raw: torch.Tensor) -> list[Any]:
        assert isinstance(self.family, PairScorer)
        scores = raw.double()
        if self.normalize and self.family.activation == "sigmoid":
            scores = torch.sigmoid(scores)
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        return scores.tolist()
