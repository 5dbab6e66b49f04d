"""The family protocol and the tokenisation helpers every family shares.

A family turns text into :class:`Encoded` sequences and a list of encoded sequences into a tensor of
scores (pair scorers) or embeddings (embedders). It never batches, sorts, threads or knows HTTP: the
runtime cuts batches, the :class:`~rerankd.reranker.Reranker` interprets scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union, runtime_checkable

import torch
from tokenizers import Encoding, Tokenizer

from rerankd.errors import UnsupportedModel
from rerankd.families.int8 import has_int8_layers
from rerankd.loading import ModelFiles

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PadSide = Literal["left", "right"]
Activation = Literal["sigmoid", "identity"]
Role = Literal["query", "document"]
Kind = Literal["score", "embed"]  # which family operation a forward pass runs
OnnxOutput = Literal["logits", "last_hidden_state"]  # the graph output an ONNX-capable family runs on


@dataclass(frozen=True, slots=True)
class Encoded:
    """One model input: token ids ready for the forward pass.

    ``full_length`` is the length the input would have had without truncation, so callers can warn or
    reject; ``prefix_length`` is the number of leading tokens shared by every sequence of one query
    (0 when the family does not share prefixes).
    """

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None = None
    full_length: int = 0
    prefix_length: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


@dataclass(frozen=True)
class ModelOptions:
    """Load-time choices a user can make; each family reads the fields that concern it.

    ``None`` means "the model's own default" (e.g. 512 tokens for encoder cross-encoders).
    """

    max_length: int | None = None
    query_max_length: int | None = None
    truncation: Literal["flag", "longest_first"] = "flag"
    pooling: Literal["auto", "cls", "mean", "max", "lasttoken", "mean_sqrt_len"] = "auto"
    query_instruction: str | None = None
    # Default exit layers of layerwise families (``None``: the model's last layer); a call's own
    # ``CallOptions.cutoff_layers`` takes precedence.
    cutoff_layers: tuple[int, ...] | None = None
    # Causal LM families: compute the query's shared prompt prefix once per batch and reuse its key/value
    # cache for every document (same scores up to float rounding); False runs every sequence whole.
    prefix_sharing: bool = True
    # Encoder families (cross-encoder, bi-encoder): run the forward pass in torch or in an ONNX Runtime
    # session (see families/onnx_runtime.py). Only families whose spec declares ``onnx_output`` read these two
    # fields; the builder rejects them for the others.
    backend: Literal["torch", "onnx"] = "torch"
    # Encoder families on CPU: dynamic int8 quantisation of the Linear layers (opt-in, float32 models only).
    quantize: Literal["int8"] | None = None
    # Default token compression and score weights (see CallOptions), for the families that read them.
    compress_ratio: int | None = None
    compress_layers: tuple[int, ...] | None = None
    score_weights: tuple[float, ...] | None = None


# Options only some families honour, each both a load option (ModelOptions: the model's default) and a per-call
# option (CallOptions); ``Capabilities.accepts`` says which families take them.
FAMILY_CHOICES = ("cutoff_layers", "compress_ratio", "compress_layers", "score_weights")


@dataclass(frozen=True)
class CallOptions:
    """Per-call choices that change the computation; the runtime only batches calls with equal options.

    ``instruction`` replaces an instruction-aware family's default instruction (Qwen3-Reranker,
    MiniCPM-Reranker) or prompt (bge LLM rerankers); ``cutoff_layers`` picks the exit layers of layerwise
    families. Families that do not use a field ignore it.
    """

    instruction: str | None = None
    cutoff_layers: tuple[int, ...] | None = None
    # bge-gemma2-lightweight: average passage tokens in windows of ``compress_ratio`` (1: off) before each layer of
    # ``compress_layers``. None: the loaded model's default.
    compress_ratio: int | None = None
    compress_layers: tuple[int, ...] | None = None
    # Multi-score families (bge-m3): weights of (dense, sparse, multi-vector) in the score; None: the model's default.
    score_weights: tuple[float, ...] | None = None


DEFAULT_CALL = CallOptions()


@dataclass(frozen=True, slots=True)
class FamilyLimits:
    """What the runtime must know to batch a family's inputs."""

    max_length: int
    pad_side: PadSide = "right"
    pad_to_multiple_of: int | None = None


@runtime_checkable
class PairScorer(Protocol):
    """A cross-encoder style family: one score (or one per output head) per query-document pair.

    ``backend`` is the plain `tokenizers` tokenizer the family encodes with (long-document chunking cuts text with
    it); ``weights()`` is the torch module whose parameters a dtype change applies to (the ``dtype="auto"``
    guard), and raises :class:`UnsupportedModel` where they cannot change (ONNX, int8)."""

    family: str
    limits: FamilyLimits
    activation: Activation
    backend: Tokenizer

    def weights(self) -> torch.nn.Module: ...

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions) -> list[Encoded]:
        """Encode one query against many documents, truncating to ``limits.max_length``."""
        ...

    def score(self, batch: Sequence[Encoded], call: CallOptions) -> torch.Tensor:
        """Raw scores, float32 on CPU, shape ``(len(batch), n_outputs)`` (one column per output, e.g.
        per cutoff layer)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """A bi-encoder family: one L2-normalised vector per text; score = cosine. ``backend`` and ``weights()`` as
    for :class:`PairScorer`."""

    family: str
    limits: FamilyLimits
    backend: Tokenizer

    def weights(self) -> torch.nn.Module: ...

    def encode_texts(self, texts: Sequence[str], role: Role) -> list[Encoded]:
        """Encode texts as queries (with the query instruction) or as documents."""
        ...

    def embed(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """L2-normalised embeddings, float32 on CPU, shape ``(len(batch), dim)``."""
        ...


def cast_parameters(module: torch.nn.Module, dtype: torch.dtype, keep_fp32: Sequence[str] = ()) -> None:
    """Cast ``module``'s floating-point parameters (not its buffers, e.g. rotary frequencies stay float32, as
    transformers loads them) to ``dtype``, except those whose name starts with one of ``keep_fp32``."""
    for name, param in module.named_parameters():
        if param.is_floating_point() and not name.startswith(tuple(keep_fp32)):
            param.data = param.data.to(dtype)


def float_module(model: object) -> torch.nn.Module:
    """An encoder family's model as a castable module; ONNX sessions and int8 models have a fixed dtype."""
    if not isinstance(model, torch.nn.Module) or has_int8_layers(model):
        raise UnsupportedModel("only float torch models can change dtype (not ONNX or int8 ones)")
    return model


class OnnxExportable(Protocol):
    """What a family whose spec declares ``Capabilities.onnx_output`` offers the ONNX exporter: its torch
    model, whether the graph takes token types, and the folder (inside the model folder) the model lives in."""

    model: Any
    uses_token_types: bool
    model_dir: Path | None


Family = Union[PairScorer, Embedder]  # noqa: UP007 - a runtime alias
BatchKey = tuple[Kind, CallOptions]  # forward passes only mix inputs with equal keys
Loader = Callable[[ModelFiles, torch.device, torch.dtype, ModelOptions, bool], Family]


@dataclass(frozen=True, slots=True)
class ComputeShape:
    """The dense work of a family's model, for FLOP estimates (``rerankd bench``): parameters outside the
    embeddings, layers, hidden size, and the parameters of a last layer that computes position 0 only (0 when
    every position runs every layer)."""

    parameters: int
    layers: int
    hidden: int
    first_row_parameters: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What a family can do, declared once on its :class:`FamilySpec` (never discovered by probing objects).

    - ``onnx_output``: the family runs on ONNX Runtime (``backend="onnx"``, ``rerankd export --onnx``, int8); the
      graph output it reads. ``None``: torch only.
    - ``fp32_heads``: parameter-name prefixes (in ``weights()``) that stay float32 when the body is cast to a
      reduced dtype (the small scoring heads).
    - ``prefix_sharing``: computes a query's shared prompt prefix once per batch (``prefix_sharing=`` option).
    - ``layer_outputs``: one score per exit layer (``cutoff_layers=``).
    - ``compute_shape``: the dense work of a loaded family's model (``None``: not estimated).
    """

    onnx_output: OnnxOutput | None = None
    fp32_heads: tuple[str, ...] = ()
    prefix_sharing: bool = False
    layer_outputs: bool = False
    compute_shape: Callable[[Family], ComputeShape | None] | None = None
    # Two-tower scorers (bge-m3, ColBERT): the text outputs ``encode_outputs`` gives ("dense", "sparse",
    # "multi_vector"; see families/late_interaction.py), and whether encoded documents are cached and reused.
    text_outputs: tuple[str, ...] = ()
    document_cache: bool = False
    token_compression: bool = False  # compress_ratio / compress_layers (bge-gemma2-lightweight)
    score_weights: bool = False  # score_weights: the weights of several scores in one (bge-m3)

    def accepts(self, option: str) -> bool:
        """Whether the family honours one of :data:`FAMILY_CHOICES` (a load option and a per-call option)."""
        return {
            "cutoff_layers": self.layer_outputs,
            "compress_ratio": self.token_compression,
            "compress_layers": self.token_compression,
            "score_weights": self.score_weights,
        }[option]

    def names(self) -> list[str]:
        """The capabilities in words, for ``rerankd models``."""
        flags = {
            "onnx/int8": self.onnx_output is not None,
            "prefix sharing": self.prefix_sharing,
            "per-layer scores": self.layer_outputs,
            "token compression": self.token_compression,
            "score weights per call": self.score_weights,
            "outputs " + "+".join(self.text_outputs): bool(self.text_outputs),
            "document-vector cache": self.document_cache,
        }
        return [name for name, present in flags.items() if present]


@dataclass(frozen=True)
class FamilySpec:
    """A registry entry: how to recognise a family from a model folder, how to load it, and what it can do."""

    name: str
    summary: str
    detection: str
    detect: Callable[[ModelFiles], bool]
    load: Loader
    # Published model ids whose config alone does not identify this family (matched on the hub id or
    # the folder's name), e.g. plain causal LMs that are rerankers only by their training.
    known_ids: tuple[str, ...] = ()
    capabilities: Capabilities = Capabilities()
    # Folders this family may run but cannot claim (a plain causal LM of its architecture, renamed): when nothing
    # detects a folder, the error suggests ``family=<name>`` for the families that say so here.
    could_run: Callable[[ModelFiles], bool] | None = None


def pad_token_id(tokenizer: PreTrainedTokenizerBase, fallback: Literal["unk", "eos"] | None = None) -> int:
    """The id to pad with: the tokenizer's pad token, else its ``fallback`` token (unknown for Llama-style
    tokenizers, end-of-sequence for causal LMs), else 0. Padding is masked, so it never changes scores."""
    second = {"unk": tokenizer.unk_token_id, "eos": tokenizer.eos_token_id}.get(fallback or "")
    return next((int(c) for c in (tokenizer.pad_token_id, second) if c is not None), 0)


def check_single_label(files: ModelFiles) -> None:
    """A sequence classifier is a reranker only with exactly one output logit."""
    config = files.config
    labels = config.get("num_labels") or len(config.get("id2label") or {0: ""})
    if labels != 1:
        raise UnsupportedModel(
            f"{files.requested} is a sequence classifier with {labels} labels; a reranker needs exactly one logit"
        )


def clean_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A copy of the fast tokenizer's backend with the padding/truncation that tokenizer.json may carry
    switched off, so every length decision is made explicitly by the family."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedModel(
            f"{type(tokenizer).__name__} is not backed by the `tokenizers` library; rerankd needs a fast "
            "tokenizer (a tokenizer.json in the model folder)"
        )
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def encode_plain(backend: Tokenizer, texts: Sequence[str]) -> list[Encoding]:
    """Tokenise texts without special tokens (batch call: parallel in Rust)."""
    return backend.encode_batch(list(texts), add_special_tokens=False)


def pair_special_count(backend: Tokenizer) -> int:
    processor = backend.post_processor
    return processor.num_special_tokens_to_add(True) if processor is not None else 0


def single_special_count(backend: Tokenizer) -> int:
    processor = backend.post_processor
    return processor.num_special_tokens_to_add(False) if processor is not None else 0


def truncate_ids(ids: Sequence[int], limit: int, side: str = "right") -> list[int]:
    if len(ids) <= limit:
        return list(ids)
    return list(ids[len(ids) - limit :]) if side == "left" else list(ids[:limit])


def collate(
    batch: Sequence[Encoded],
    *,
    pad_id: int,
    pad_side: PadSide,
    device: torch.device,
    pad_to_multiple_of: int | None = None,
    with_token_types: bool = False,
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member and build the attention mask."""
    longest = max(len(item) for item in batch)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    types = torch.zeros((len(batch), longest), dtype=torch.long) if with_token_types else None
    for row, item in enumerate(batch):
        n = len(item)
        span = slice(longest - n, longest) if pad_side == "left" else slice(0, n)
        ids[row, span] = torch.tensor(item.input_ids, dtype=torch.long)
        mask[row, span] = 1
        if types is not None and item.token_type_ids is not None:
            types[row, span] = torch.tensor(item.token_type_ids, dtype=torch.long)
    out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if types is not None:
        out["token_type_ids"] = types.to(device)
    return out


def last_token_index(attention_mask: torch.Tensor, pad_side: PadSide) -> torch.Tensor:
    """Index of each row's last real token."""
    if pad_side == "left":
        return torch.full((attention_mask.shape[0],), attention_mask.shape[1] - 1, device=attention_mask.device)
    return attention_mask.sum(dim=1) - 1
