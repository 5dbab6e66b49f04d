"""The ``Reranker`` facade: what users and every front end call.

It owns score interpretation (normalisation, ordering, ``top_n``), truncation policy and long-document
chunking; families own model math and the runtime owns batching.

Every scoring call goes through the same two steps, which the server's scheduler also uses:
:meth:`Reranker.prepare_pairs` / :meth:`~Reranker.prepare_embed` encode the inputs into a
:class:`ScoringJob` (model inputs + how to turn their raw outputs into one row per input), and
:meth:`Reranker.run` (or the scheduler, batch by batch through :meth:`Reranker.forward`) computes them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from rerankd.chunking import Split, backend_of, fit_documents
from rerankd.errors import InvalidInput
from rerankd.families.base import CallOptions, Embedder, Encoded, ModelOptions, PairScorer, Role
from rerankd.families.encoder_backend import SUPPORTED_FAMILIES, check_backend
from rerankd.jobs import (
    DEFAULT_OPTIONS,
    Kind,
    ScoreOptions,
    ScoringJob,
    cosine_finisher,
    describe_cut,
    identity,
    score_finisher,
    too_long,
)
from rerankd.loading import Source, resolve_model
from rerankd.registry import Family, detect_family
from rerankd.runtime.devices import configure_cpu_threads, resolve_device, resolve_dtype
from rerankd.runtime.dtype_guard import PROBE_PAIRS, Agreement, check_loaded, float32_fits
from rerankd.runtime.planner import TokenBudget
from rerankd.runtime.worker import Forward, run_planned
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
    dtype_check: Agreement | None = None  # the dtype="auto" guard's probe agreement, when it ran
    backend: str = "torch"  # "torch" or "onnx"
    quantize: str | None = None  # "int8" when the Linear layers run dynamically quantised


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
        backend: Literal["torch", "onnx"] = "torch",
        quantize: Literal["int8"] | None = None,
        cutoff_layers: Sequence[int] | int | None = None,
        prefix_sharing: bool = True,
        dtype_guard: bool = True,
    ) -> Reranker:
        """Load a reranker from a local folder, a packaged model, the Hugging Face hub or ModelScope.

        ``normalize=True`` maps scores to [0, 1] with the model's declared activation (sigmoid unless its
        config declares Identity, as ms-marco cross-encoders do); ``False`` returns raw logits. Bi-encoders
        always return cosine similarity. ``truncate=False`` rejects over-long inputs with
        :class:`~rerankd.errors.InputTooLong` instead of truncating them. ``backend="onnx"`` and
        ``quantize="int8"`` apply to encoder families; ``cutoff_layers`` sets a layerwise model's default exit
        layers; ``prefix_sharing=False`` turns off the causal families' shared query-prefix cache.
        When ``dtype="auto"`` picks a reduced precision, a probe set is scored in float32 and in that dtype
        at load, and the model stays float32 if the ranking changes (``dtype_guard=False`` skips the check;
        see :mod:`rerankd.runtime.dtype_guard`).
        """
        started = time.perf_counter()
        torch_device = resolve_device(device)
        if torch_device.type == "cpu":
            configure_cpu_threads()
        if (backend != "torch" or quantize) and dtype == "auto":
            dtype = "float32"  # ONNX graphs and int8 start from float32
        torch_dtype = resolve_dtype(dtype, torch_device)
        files = resolve_model(
            model, source=source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        spec = detect_family(files, family)
        if (backend != "torch" or quantize) and spec.name not in SUPPORTED_FAMILIES:
            raise InvalidInput(f"backend/quantize apply to {', '.join(SUPPORTED_FAMILIES)} models, not {spec.name}")
        options = ModelOptions(
            max_length=max_length,
            query_max_length=query_max_length,
            truncation=truncation,
            pooling=pooling,
            query_instruction=query_instruction,
            cutoff_layers=cls.call_options(None, cutoff_layers).cutoff_layers,
            prefix_sharing=prefix_sharing,
            backend=backend,
            quantize=quantize,
        )
        check_backend(options, torch_device, torch_dtype)
        guarded = dtype == "auto" and dtype_guard and torch_dtype != torch.float32 and backend == "torch"
        guarded = guarded and not quantize and float32_fits(files.path, torch_device)
        loaded = spec.load(files, torch_device, torch.float32 if guarded else torch_dtype, options, trust_remote_code)
        base = default_budget(torch_device)
        budget = TokenBudget(batch_tokens or base.max_tokens, max_batch_size or base.max_batch_size)
        info = ModelInfo(
            name=model,
            path=str(files.path),
            family=spec.name,
            device=str(torch_device),
            dtype=str(torch_dtype).removeprefix("torch."),
            max_length=loaded.limits.max_length,
            load_seconds=0.0,
            backend=backend,
            quantize=quantize,
        )
        reranker = cls(loaded, info, normalize=normalize, truncate=truncate, budget=budget)
        if guarded:
            torch_dtype, agreement = check_loaded(loaded, lambda: reranker.score(PROBE_PAIRS), torch_dtype)
            info = replace(info, dtype=str(torch_dtype).removeprefix("torch."), dtype_check=agreement)
        reranker.info = replace(info, load_seconds=time.perf_counter() - started)
        logger.info("loaded %s as %s on %s (%s)", model, spec.name, info.device, info.dtype)
        return reranker

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
        :class:`ScoreOptions`); ``progress`` counts model inputs (chunks) as they finish.
        """
        check_query(query)
        docs = check_texts(documents)
        limit = check_top_n(top_n)
        call = self.call_options(instruction, cutoff_layers)
        options = ScoreOptions(
            instruction=call.instruction,
            cutoff_layers=call.cutoff_layers,
            max_chunks_per_doc=max_chunks_per_doc,
            max_tokens_per_doc=max_tokens_per_doc,
        )
        job = self.prepare_pairs([(query, doc) for doc in docs], options)
        table: list[list[float]] = self.run(job, progress).tolist()
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
        call = self.call_options(instruction, cutoff_layers)
        options = ScoreOptions(instruction=call.instruction, cutoff_layers=call.cutoff_layers)
        table: list[list[float]] = self.run(self.prepare_pairs(pairs, options), progress).tolist()
        return [row[0] if len(row) == 1 else row for row in table]

    def embed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        """L2-normalised embeddings ``(len(texts), dim)`` (bi-encoder families only)."""
        return self.run(self.prepare_embed(texts, role)).numpy()

    def count_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        """Model tokens each (query, document) input uses after truncation."""
        return self.prepare_pairs([(query, d) for d in documents], ScoreOptions(truncate=True)).tokens

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RankedDocument]:
        return await asyncio.to_thread(self.rank, query, documents, top_n)

    async def ascore(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await asyncio.to_thread(self.score, pairs)

    async def aembed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts, role)

    # ------------------------------------------------------------------ the two steps
    def prepare_pairs(self, pairs: Sequence[tuple[str, str]], options: ScoreOptions = DEFAULT_OPTIONS) -> ScoringJob:
        """Validate and encode (query, document) pairs; the job's rows are one score row per pair."""
        checked = check_pairs(pairs)
        options.check()
        call = self.call_options(options.instruction, options.cutoff_layers)
        groups: dict[str, list[int]] = {}
        for position, (query, _) in enumerate(checked):
            groups.setdefault(query, []).append(position)
        if isinstance(self.family, Embedder):
            return self._prepare_cosine(checked, groups, options)
        return self._prepare_scored(checked, groups, options, call)

    def prepare_embed(self, texts: Sequence[str], role: Role = "document") -> ScoringJob:
        """Validate and encode texts for embedding (bi-encoders only); the job's rows are the vectors."""
        items = check_texts(texts, param="texts")
        if not isinstance(self.family, Embedder):
            raise InvalidInput(f"{self.info.name} is a {self.info.family}; embeddings need a bi-encoder model")
        encoded = self.family.encode_texts(items, role)
        truncated = self._check_lengths(encoded, range(len(encoded)), self.truncate, param="texts")
        warnings = describe_cut(truncated, chunked=False, limit=self.info.max_length, what="input")
        return ScoringJob(encoded, "embed", CallOptions(), [len(e) for e in encoded], truncated, warnings, identity)

    def run(self, job: ScoringJob, progress: Progress | None = None) -> torch.Tensor:
        """Compute a job synchronously in token-budgeted batches; returns its rows ``(inputs, outputs)``."""
        with self._lock:
            forward = self._forward_fn(job.kind, job.call)
            raw = run_planned(forward, job.items, self.family.limits, self.budget, progress)
        return job.finish(raw)

    def forward(self, batch: Sequence[Encoded], kind: Kind, call: CallOptions) -> torch.Tensor:
        """One forward pass over a batch the caller has cut (the server's scheduler); raw outputs."""
        with self._lock, torch.inference_mode():
            return self._forward_fn(kind, call)(batch)

    @staticmethod
    def call_options(instruction: str | None, cutoff_layers: Sequence[int] | int | None) -> CallOptions:
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

    # ------------------------------------------------------------------ internals
    def _forward_fn(self, kind: Kind, call: CallOptions) -> Forward:
        family = self.family
        if kind == "embed":
            assert isinstance(family, Embedder)
            return family.embed
        assert isinstance(family, PairScorer)
        return lambda batch: family.score(batch, call)

    def _prepare_scored(
        self, pairs: list[tuple[str, str]], groups: dict[str, list[int]], options: ScoreOptions, call: CallOptions
    ) -> ScoringJob:
        family = self.family
        assert isinstance(family, PairScorer)
        truncate = self.truncate if options.truncate is None else options.truncate
        items: list[Encoded] = []
        owners: list[int] = []
        tokens = [0] * len(pairs)
        cut: list[int] = []
        for query, positions in groups.items():
            docs = [pairs[p][1] for p in positions]
            if options.reshapes_text:
                overhead = len(family.encode_pairs(query, [""], call)[0])
                splits = self._fit(docs, positions, options, overhead, truncate)
                cut.extend(p for p, s in zip(positions, splits, strict=True) if s.dropped)
                windows = [(p, text) for p, s in zip(positions, splits, strict=True) for text in s.windows]
            else:
                windows = list(zip(positions, docs, strict=True))
            encoded = family.encode_pairs(query, [text for _, text in windows], call)
            cut.extend(self._check_lengths(encoded, [p for p, _ in windows], truncate or options.chunked))
            for (position, _), item in zip(windows, encoded, strict=True):
                items.append(item)
                owners.append(position)
                tokens[position] += len(item)
        normalize = self.normalize if options.normalize is None else options.normalize
        squash = normalize and family.activation == "sigmoid"
        finish = score_finisher(owners, len(pairs), squash)
        cut = sorted(set(cut))
        return ScoringJob(items, "score", call, tokens, cut, self._warnings(cut, options), finish)

    def _prepare_cosine(
        self, pairs: list[tuple[str, str]], groups: dict[str, list[int]], options: ScoreOptions
    ) -> ScoringJob:
        family = self.family
        assert isinstance(family, Embedder)
        truncate = self.truncate if options.truncate is None else options.truncate
        queries = list(groups)
        query_items = family.encode_texts(queries, "query")
        cut = self._check_lengths(query_items, [groups[q][0] for q in queries], truncate)
        docs = [doc for _, doc in pairs]
        positions = list(range(len(pairs)))
        if options.reshapes_text:
            overhead = len(family.encode_texts([""], "document")[0])  # special tokens only
            splits = self._fit(docs, positions, options, overhead, truncate)
        else:
            splits = [Split((doc,), 0, 0) for doc in docs]
        cut.extend(p for p, s in enumerate(splits) if s.dropped)
        windows = [(p, text) for p, s in enumerate(splits) for text in s.windows]
        doc_items = family.encode_texts([text for _, text in windows], "document")
        cut.extend(self._check_lengths(doc_items, [p for p, _ in windows], truncate or options.chunked))
        tokens = [0] * len(pairs)
        query_of = {q: i for i, q in enumerate(queries)}
        rows = [query_of[pairs[p][0]] for p, _ in windows]
        for (position, _), item in zip(windows, doc_items, strict=True):
            tokens[position] += len(item)
        for query, members in groups.items():
            for position in members:
                tokens[position] += len(query_items[query_of[query]])
        owners = [p for p, _ in windows]
        finish = cosine_finisher(len(queries), rows, owners, len(pairs))
        call = CallOptions()
        cut = sorted(set(cut))
        return ScoringJob(query_items + doc_items, "embed", call, tokens, cut, self._warnings(cut, options), finish)

    def _fit(
        self, docs: list[str], positions: Sequence[int], options: ScoreOptions, overhead: int, truncate: bool
    ) -> list[Split]:
        """Cut or split documents as text so that each piece fits the model next to its query."""
        limit = self.info.max_length
        if options.max_input_tokens is not None:
            if options.max_input_tokens > limit:
                raise InvalidInput(
                    f"max_input_tokens={options.max_input_tokens} is over the model's limit of {limit}",
                    param="truncate_prompt_tokens",
                )
            limit = options.max_input_tokens
        splits = fit_documents(
            backend_of(self.family),
            docs,
            limit - overhead,
            chunked=options.chunked,
            side=options.truncation_side,
            max_tokens=options.max_tokens_per_doc,
            max_chunks=options.max_chunks_per_doc,
        )
        if not truncate and not options.chunked:
            for position, split in zip(positions, splits, strict=True):
                if split.dropped:
                    raise too_long(position, overhead + split.tokens, limit)
        return splits

    def _check_lengths(
        self, encoded: Sequence[Encoded], positions: Sequence[int], truncate: bool, param: str = "documents"
    ) -> list[int]:
        """Positions of truncated inputs; with truncation off, the first one raises InputTooLong."""
        cut = []
        for position, item in zip(positions, encoded, strict=True):
            if item.truncated:
                if not truncate:
                    raise too_long(position, item.full_length, self.family.limits.max_length, param)
                cut.append(position)
        return cut

    def _warnings(self, cut: list[int], options: ScoreOptions) -> list[str]:
        return describe_cut(cut, chunked=options.chunked, limit=self.input_limit(options))

    def input_limit(self, options: ScoreOptions) -> int:
        """Tokens one model input may have under ``options``."""
        return options.max_input_tokens or self.info.max_length
