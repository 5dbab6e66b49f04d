"""Encoder cross-encoders: BERT / XLM-R / ... ``*ForSequenceClassification`` with one output logit.

Default input recipe ("flag", FlagEmbedding's FlagReranker): query and passage are tokenised separately
without specials; the query is capped at ``query_max_length`` (default ``max_length * 3 // 4``); the
passage is truncated (``only_second``) so that query + passage + the pair's special tokens fit
``max_length``; the pair is joined with the tokenizer's own pair template (``[CLS] q [SEP] p [SEP]`` with
token types for BERT, ``<s> q </s></s> p </s>`` for XLM-R). The "longest_first" variant is the plain
transformers / sentence-transformers recipe (``tokenizer(q, p, truncation=True)``); both agree whenever
nothing is truncated.

Score: the single logit. Activation: sigmoid, unless the model's config declares another one the way
sentence-transformers stores it (ms-marco cross-encoders declare Identity: their official scores are logits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Encoding

from rerankd.errors import UnsupportedModel
from rerankd.families.base import (
    DEFAULT_CALL,
    Activation,
    CallOptions,
    Capabilities,
    ComputeShape,
    Encoded,
    Family,
    FamilyLimits,
    FamilySpec,
    ModelOptions,
    OnnxOutput,
    check_single_label,
    clean_backend,
    collate,
    encode_plain,
    float_module,
    pad_token_id,
    pair_special_count,
)
from rerankd.families.encoder_backend import encoder_model, model_device
from rerankd.families.first_token import dense_shape, trim_last_layer
from rerankd.loading import ModelFiles, model_load_kwargs

logger = logging.getLogger(__name__)

ONNX_OUTPUT: OnnxOutput = "logits"


def declared_activation(config: dict[str, Any]) -> Activation:
    """The activation a model's config declares (sentence-transformers conventions), default sigmoid."""
    st_section = config.get("sentence_transformers") or {}
    path = st_section.get("activation_fn") or config.get("sbert_ce_default_activation_function")
    if not path:
        return "sigmoid"
    name = str(path).rsplit(".", 1)[-1].lower()
    if name == "identity":
        return "identity"
    if name != "sigmoid":
        logger.warning("config declares activation %s; rerankd applies sigmoid for normalised scores", path)
    return "sigmoid"


class CrossEncoderFamily:
    """A sequence-classification encoder scoring (query, passage) pairs."""

    family = "cross-encoder"

    def __init__(self, model: Any, tokenizer: Any, config: dict[str, Any], options: ModelOptions) -> None:
        self.model = model
        self.device: torch.device = model_device(model)
        self.backend = clean_backend(tokenizer)
        max_length = options.max_length or _default_max_length(tokenizer, config)
        self.limits = FamilyLimits(max_length=max_length, pad_side="right")
        self.query_max_length = options.query_max_length or max_length * 3 // 4
        self.truncation = options.truncation
        self.activation: Activation = declared_activation(config)
        self.pad_id = pad_token_id(tokenizer)
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names
        self.model_dir: Path | None = None  # the folder the weights came from
        self.n_special = pair_special_count(self.backend)
        self.truncating_backend = clean_backend(tokenizer)
        self.truncating_backend.enable_truncation(max_length, strategy="longest_first")
        if max_length <= self.n_special + 1:
            raise UnsupportedModel(f"max_length={max_length} leaves no room for text")

    def weights(self) -> torch.nn.Module:
        return float_module(self.model)

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        if self.truncation == "longest_first":
            return self._encode_longest_first(query, documents)
        query_enc = encode_plain(self.backend, [query])[0]
        query_len = len(query_enc.ids)
        query_enc.truncate(self.query_max_length)
        doc_budget = max(self.limits.max_length - len(query_enc.ids) - self.n_special, 0)
        out = []
        for doc_enc in encode_plain(self.backend, documents):
            doc_len = len(doc_enc.ids)
            doc_enc.truncate(doc_budget)
            out.append(self._joined(query_enc, doc_enc, query_len + doc_len + self.n_special))
        return out

    def _encode_longest_first(self, query: str, documents: Sequence[str]) -> list[Encoded]:
        pairs = [(query, doc) for doc in documents]
        query_len = len(encode_plain(self.backend, [query])[0].ids)
        doc_lens = [len(enc.ids) for enc in encode_plain(self.backend, documents)]
        encodings = self.truncating_backend.encode_batch(pairs, add_special_tokens=True)
        return [
            self._as_encoded(enc, query_len + doc_len + self.n_special)
            for enc, doc_len in zip(encodings, doc_lens, strict=True)
        ]

    def _joined(self, query_enc: Encoding, doc_enc: Encoding, full_length: int) -> Encoded:
        pair = self.backend.post_process(query_enc, doc_enc, add_special_tokens=True)
        return self._as_encoded(pair, full_length)

    def _as_encoded(self, enc: Encoding, full_length: int) -> Encoded:
        types = tuple(enc.type_ids) if self.uses_token_types else None
        return Encoded(input_ids=tuple(enc.ids), token_type_ids=types, full_length=full_length)

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        inputs = collate(
            batch,
            pad_id=self.pad_id,
            pad_side="right",
            device=self.device,
            with_token_types=self.uses_token_types,
        )
        logits = self.model(**inputs).logits
        return logits[:, :1].float().cpu()


def _default_max_length(tokenizer: Any, config: dict[str, Any]) -> int:
    """512, or less when the tokenizer or position table says so (FlagReranker's default is 512)."""
    limit = 512
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < limit:
        limit = tok_max
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and config.get("model_type") in ("xlm-roberta", "roberta", "camembert"):
        positions -= 2  # RoBERTa-style position ids start after the padding index
    if isinstance(positions, int) and 0 < positions < limit:
        limit = positions
    return limit


def load_cross_encoder(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> CrossEncoderFamily:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_single_label(files)
    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=trust_remote_code)

    def build() -> torch.nn.Module:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(files.path), dtype=dtype, **model_load_kwargs(files, trust_remote_code)
        )
        trim_last_layer(model)  # the head reads position 0 only: skip the rest of the last layer (torch and ONNX)
        return model

    model = encoder_model(files.path, build, tokenizer, ONNX_OUTPUT, device, dtype, options)
    family = CrossEncoderFamily(model, tokenizer, files.config, options)
    family.model_dir = files.path
    return family


def _compute_shape(family: Family) -> ComputeShape | None:
    assert isinstance(family, CrossEncoderFamily)
    return dense_shape(family.model)


def _detect(files: ModelFiles) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in files.config.get("architectures") or [])


SPEC = FamilySpec(
    name="cross-encoder",
    summary="BERT/XLM-R/... sequence classifiers with one logit (bge-reranker-base/large/v2-m3, ms-marco)",
    detection="architectures: *ForSequenceClassification, num_labels 1",
    detect=_detect,
    load=load_cross_encoder,
    capabilities=Capabilities(onnx_output=ONNX_OUTPUT, compute_shape=_compute_shape),
)
