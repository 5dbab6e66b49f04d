"""The ``Reranker`` facade: what users and every front end call.

It validates the caller's input once, prepares a :class:`~rerankd.jobs.ScoringJob` (encoding, truncation policy,
long-document chunking: :mod:`rerankd.jobs`), runs it through the model's runtime
:class:`~rerankd.runtime.worker.Worker` in planned batches, and presents the rows: scores, the ranking and
``top_n``. Loading lives in :mod:`rerankd.builder`; the server submits the same prepared jobs to its scheduler,
which calls the same worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rerankd.builder import LoadedModel, LoadOptions, ModelInfo, check_family_choices, load_model
from rerankd.errors import InvalidInput
from rerankd.families.base import Embedder, Family, Role
from rerankd.jobs import (
    DEFAULT_OPTIONS,
    UNBOUNDED,
    Budget,
    ScoreOptions,
    ScoringJob,
    call_options,
    input_limit,
    prepare_embed,
    prepare_pairs,
    primary_score,
    ranking,
)
from rerankd.runtime.planner import TokenBudget
from rerankd.runtime.worker import FamilyWorker, run_planned
from rerankd.validation import CheckedPairs, CheckedTexts, check_pairs, check_texts, check_top_n, ranking_pairs

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]

__all__ = ["ModelInfo", "RankedDocument", "Reranker"]


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


class Reranker:
    """Score query-document pairs with any supported reranker family.

    Build one with :meth:`from_pretrained`. Methods are thread-safe (forward passes are serialised per
    model); the ``a*`` variants run them in a worker thread so an event loop stays responsive.
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.worker: FamilyWorker = model.worker
        self.budget: TokenBudget = model.budget

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike[str], options: LoadOptions | None = None, **kwargs: Any
    ) -> Reranker:
        """Load a reranker from a local folder, a packaged model, the Hugging Face hub or ModelScope.

        Keywords (see :class:`~rerankd.builder.LoadOptions`): ``device`` (auto, cpu, cuda[:N], npu[:N], mps),
        ``dtype`` (auto, float32, float16, bfloat16), ``family`` (override detection), ``normalize`` (scores in
        [0, 1] with the model's declared activation; ``False``: raw logits; bi-encoders always give cosines),
        ``truncate`` (``False`` rejects over-long inputs with :class:`~rerankd.errors.InputTooLong`),
        ``batch_tokens`` / ``max_batch_size`` (the token budget per forward pass), ``dtype_guard``; the family's
        own options ``max_length``, ``query_max_length``, ``truncation`` ("flag" | "longest_first"),
        ``pooling``, ``query_instruction``, ``cutoff_layers`` (layerwise families), ``prefix_sharing`` (causal
        families), ``backend`` ("torch" | "onnx") and ``quantize`` ("int8"; ONNX-capable families); and where the
        files come from: ``source``, ``revision``, ``cache_dir``, ``local_files_only``, ``trust_remote_code``.
        When ``dtype="auto"`` picks a reduced precision, a probe set is scored in float32 and in that dtype at
        load, and the model stays float32 if the ranking changes (:mod:`rerankd.runtime.dtype_guard`).
        """
        given = options.with_changes(**kwargs) if options is not None else LoadOptions.from_kwargs(**kwargs)
        return cls(load_model(os.fspath(model), given))

    @property
    def family(self) -> Family:
        return self.model.family

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def normalize(self) -> bool:
        return self.model.defaults.normalize

    @property
    def truncate(self) -> bool:
        return self.model.defaults.truncate

    @property
    def is_embedder(self) -> bool:
        return isinstance(self.family, Embedder)

    # ------------------------------------------------------------------ scoring
    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        instruction: str | None = None,
        cutoff_layers: Sequence[int] | None = None,
        max_chunks_per_doc: int | None = None,
        max_tokens_per_doc: int | None = None,
        progress: Progress | None = None,
    ) -> list[RankedDocument]:
        """Documents sorted by relevance to ``query``, best first (ties keep input order).

        ``instruction`` overrides an instruction-aware family's default instruction or prompt;
        ``cutoff_layers`` picks the exit layers of a layerwise family. ``max_chunks_per_doc`` /
        ``max_tokens_per_doc`` score long documents by their best overlapping chunk (see
        :class:`~rerankd.jobs.ScoreOptions`); ``progress`` counts model inputs (chunks) as they finish.
        """
        pairs = ranking_pairs(query, documents)
        limit = check_top_n(top_n)
        options = self._options(instruction, cutoff_layers, max_chunks_per_doc, max_tokens_per_doc)
        table = self.rows(pairs, options, progress)
        scores = [primary_score(row) for row in table]
        return [
            RankedDocument(i, scores[i], pairs[i][1], tuple(table[i]) if len(table[i]) > 1 else None)
            for i in ranking(scores, limit)
        ]

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        cutoff_layers: Sequence[int] | int | None = None,
        progress: Progress | None = None,
    ) -> list[float]:
        """One score per (query, document) pair, in input order. Layerwise models score at the deepest of
        ``cutoff_layers``; :meth:`score_layers` gives every layer's score."""
        table = self.rows(check_pairs(pairs), self._options(instruction, cutoff_layers), progress)
        return [primary_score(row) for row in table]

    def score_layers(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        cutoff_layers: Sequence[int] | int | None = None,
        instruction: str | None = None,
        progress: Progress | None = None,
    ) -> list[tuple[float, ...]]:
        """Per-layer scores of a layerwise model: one tuple per pair, one score per cutoff layer (ascending).
        Scores of different layers are not on one scale."""
        if not self.model.spec.capabilities.layer_outputs:
            raise InvalidInput(f"{self.info.family} has no per-layer outputs", param="cutoff_layers")
        table = self.rows(check_pairs(pairs), self._options(instruction, cutoff_layers), progress)
        return [tuple(row) for row in table]

    def embed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        """L2-normalised embeddings ``(len(texts), dim)`` (bi-encoder families only)."""
        return self.run(self.prepare_embed(check_texts(texts, param="texts"), role)).numpy()

    def count_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        """Model tokens each (query, document) input uses after truncation."""
        return self.prepare_pairs(ranking_pairs(query, documents), ScoreOptions(truncate=True)).tokens

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RankedDocument]:
        return await asyncio.to_thread(self.rank, query, documents, top_n)

    async def ascore(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await asyncio.to_thread(self.score, pairs)

    async def aembed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts, role)

    # ------------------------------------------------------------------ the two steps (also the server's)
    def prepare_pairs(
        self, pairs: CheckedPairs, options: ScoreOptions = DEFAULT_OPTIONS, budget: Budget = UNBOUNDED
    ) -> ScoringJob:
        """Encode checked pairs (:func:`rerankd.validation.check_pairs`); one score row per pair. ``budget``
        bounds the work (the server's deadline and input limit)."""
        check_family_choices(self.model.spec, options)
        return prepare_pairs(self.family, pairs, options, self.model.defaults, budget)

    def prepare_embed(self, texts: CheckedTexts, role: Role = "document", budget: Budget = UNBOUNDED) -> ScoringJob:
        """Encode checked texts for embedding (bi-encoders only); the job's rows are the vectors."""
        if not isinstance(self.family, Embedder):
            raise InvalidInput(f"{self.info.name} is a {self.info.family}; embeddings need a bi-encoder model")
        return prepare_embed(self.family, texts, role, self.truncate, budget)

    def run(self, job: ScoringJob, progress: Progress | None = None) -> torch.Tensor:
        """Compute a job synchronously in token-budgeted batches; returns its rows ``(inputs, outputs)``."""
        return job.finish(run_planned(self.worker, job.items, job.key, self.budget, progress))

    def rows(self, pairs: CheckedPairs, options: ScoreOptions, progress: Progress | None = None) -> list[list[float]]:
        """Score rows of checked pairs (one column, or one per cutoff layer)."""
        table: list[list[float]] = self.run(self.prepare_pairs(pairs, options), progress).tolist()
        return table

    def input_limit(self, options: ScoreOptions) -> int:
        """Tokens one model input may have under ``options``."""
        return input_limit(self.family, options)

    @staticmethod
    def _options(
        instruction: str | None,
        cutoff_layers: Sequence[int] | int | None,
        max_chunks_per_doc: int | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> ScoreOptions:
        call = call_options(instruction, cutoff_layers)
        return ScoreOptions(
            instruction=call.instruction,
            cutoff_layers=call.cutoff_layers,
            max_chunks_per_doc=max_chunks_per_doc,
            max_tokens_per_doc=max_tokens_per_doc,
        )
