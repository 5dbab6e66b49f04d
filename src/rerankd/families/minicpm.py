"""openbmb/MiniCPM-Reranker: a bidirectional MiniCPM sequence classifier (MODELS.md §6, seed 003).

Reference: the model card (its code lives on the Hub; rerankd runs no remote code). rerankd runs its own MiniCPM
body (:mod:`rerankd.families.minicpm_model`) with bidirectional attention when the config says
``is_causal: false`` (the published model does).

Input (the card's recipe: the query text and the document tokenised separately, then joined as a pair)::

    <s>Instruction: {instruction} Query: {query}</s>{document}     # with an instruction
    <s>Query: {query}</s>{document}                                 # without (the default)

A call's ``instruction`` selects the first form. Pairs longer than ``max_length`` (default 1024, specials
included) are cut "longest first" as the card's ``tokenizer(..., truncation=True)`` does; right padding.
Score: one logit from the ``score`` head (kept in float32); sigmoid gives the card's [0, 1] scores.

NOT VERIFIED FROM SOURCE (the model's Hub code was not available): which position is pooled and whether the
final hidden state is divided by ``hidden_size / dim_model_base`` before the head. rerankd implements the
Llama-style sequence-classification behaviour: the last non-padding token, unscaled. Both choices are the two
constants :data:`POOLING` and :data:`SCALE_HIDDEN_BEFORE_HEAD` below, and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Literal

import torch
from torch import nn

from rerankd.errors import UnsupportedModel
from rerankd.families.base import (
    DEFAULT_CALL,
    Activation,
    CallOptions,
    Capabilities,
    Encoded,
    FamilyLimits,
    FamilySpec,
    ModelOptions,
    check_single_label,
    clean_backend,
    collate,
    encode_plain,
    last_token_index,
    pad_token_id,
)
from rerankd.families.minicpm_model import MiniCPMConfig, MiniCPMModel, load_checkpoint, read_checkpoint
from rerankd.loading import ModelFiles

logger = logging.getLogger(__name__)

HEADS = ("score.",)  # the scoring heads: float32 whatever the body's dtype

# ---- Unverified from source (MODELS.md §6): the two choices live here and only here. ----
#: Which hidden states feed the score head: "last_token" = the last non-padding token (Llama-style sequence
#: classification, the implemented assumption); "mean" = the mean over real tokens (MiniCPM-Embedding style).
POOLING: Final[Literal["last_token", "mean"]] = "last_token"
#: Whether the pooled hidden state is divided by ``hidden_size / dim_model_base`` (MiniCPM's muP output scaling
#: for its LM head) before the score head. Llama-style classification does not scale.
SCALE_HIDDEN_BEFORE_HEAD: Final[bool] = False

ARCHITECTURE = "MiniCPMForSequenceClassification"
DEFAULT_MAX_LENGTH = 1024
N_SPECIAL = 2  # <s> before the query, </s> between query and document


def query_text(query: str, instruction: str | None) -> str:
    return f"Instruction: {instruction} Query: {query}" if instruction else f"Query: {query}"


def truncate_longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Cut the longer sequence first, then both evenly (transformers' ``longest_first`` for a pair)."""
    excess = len(first) + len(second) - budget
    if excess <= 0:
        return first, second
    gap = min(abs(len(first) - len(second)), excess)
    rest = excess - gap
    if len(first) > len(second):
        cut_first, cut_second = gap + rest // 2, rest - rest // 2
    else:
        cut_first, cut_second = rest // 2, gap + rest - rest // 2
    return first[: len(first) - cut_first], second[: len(second) - cut_second]


class SequenceClassifierNetwork(nn.Module):
    """The MiniCPM body plus the ``score`` head, with the checkpoint's parameter names."""

    def __init__(self, config: MiniCPMConfig, num_labels: int) -> None:
        super().__init__()
        self.model = MiniCPMModel(config)
        self.score = nn.Linear(config.hidden_size, num_labels, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Float32 logits (batch, num_labels)."""
        if POOLING == "last_token":
            rows = last_token_index(attention_mask, "right")
            pooled = self.model.norm(self.model(input_ids, attention_mask, rows=rows)[0]).float()
        else:
            hidden = self.model.norm(self.model(input_ids, attention_mask)[0]).float()
            weights = attention_mask.unsqueeze(-1).float()
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        if SCALE_HIDDEN_BEFORE_HEAD:
            config = self.model.config
            pooled = pooled / (config.hidden_size / config.dim_model_base)
        logits: torch.Tensor = self.score(pooled)
        return logits


class MiniCPMRerankerFamily:
    """openbmb/MiniCPM-Reranker: one logit per pair, optional per-call instruction."""

    family = "minicpm-reranker"
    activation: Activation = "sigmoid"

    def __init__(self, network: SequenceClassifierNetwork, tokenizer: Any, options: ModelOptions) -> None:
        self.network = network
        self.device: torch.device = next(network.parameters()).device
        self.backend = clean_backend(tokenizer)
        max_length = options.max_length or DEFAULT_MAX_LENGTH
        if max_length <= N_SPECIAL + 1:
            raise UnsupportedModel(f"max_length={max_length} leaves no room for text")
        self.limits = FamilyLimits(max_length=max_length, pad_side="right")
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise UnsupportedModel("MiniCPM-Reranker's tokenizer needs <s> and </s> tokens")
        self.bos_id: int = tokenizer.bos_token_id
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id = pad_token_id(tokenizer, "unk")

    def weights(self) -> torch.nn.Module:
        return self.network

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        query_ids = list(encode_plain(self.backend, [query_text(query, call.instruction)])[0].ids)
        budget = self.limits.max_length - N_SPECIAL
        encoded = []
        for doc in encode_plain(self.backend, documents):
            first, second = truncate_longest_first(query_ids, list(doc.ids), budget)
            encoded.append(
                Encoded(
                    input_ids=(self.bos_id, *first, self.eos_id, *second),
                    full_length=len(query_ids) + len(doc.ids) + N_SPECIAL,
                )
            )
        return encoded

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        inputs = collate(batch, pad_id=self.pad_id, pad_side="right", device=self.device)
        return self.network(inputs["input_ids"], inputs["attention_mask"])[:, :1].cpu()


def load_minicpm_reranker(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> MiniCPMRerankerFamily:
    from transformers import AutoTokenizer

    config = files.config
    check_single_label(files)
    # The published model sets is_causal: false; a MiniCPM classifier without the key is the causal original.
    body = MiniCPMConfig.from_dict(config, causal=bool(config.get("is_causal", True)))
    with torch.device("meta"):
        network = SequenceClassifierNetwork(body, num_labels=1)
    load_checkpoint(network, read_checkpoint(files.path), dtype, keep_fp32=HEADS)
    network.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=trust_remote_code)
    return MiniCPMRerankerFamily(network, tokenizer, options)


def _detect(files: ModelFiles) -> bool:
    return ARCHITECTURE in (files.config.get("architectures") or [])


SPEC = FamilySpec(
    name="minicpm-reranker",
    summary="openbmb/MiniCPM-Reranker: bidirectional MiniCPM, one logit, optional instruction",
    detection=f"architectures: {ARCHITECTURE} (is_causal: false = bidirectional)",
    detect=_detect,
    load=load_minicpm_reranker,
    known_ids=("openbmb/MiniCPM-Reranker",),
    capabilities=Capabilities(fp32_heads=HEADS),
)
