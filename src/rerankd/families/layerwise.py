"""bge-reranker-v2-minicpm-layerwise: a MiniCPM decoder with one scoring head per exit layer.

Reference: FlagEmbedding's ``LayerWiseFlagLLMReranker`` (``inference/reranker/decoder_only/layerwise.py``) with
its ``modeling_minicpm_reranker.py``; see MODELS.md §3. rerankd runs its own MiniCPM body
(:mod:`rerankd.families.minicpm_model`) on the published weights.

Input, per pair (pieces tokenised separately, no special tokens):
``[bos] + tok("A: " + query)[:query_max_length] + tok("\\n") + tok("B: " + passage)[:max_length]``, where the
``"\\n" + passage`` part is cut from its end so that the whole stays within
``max_length + len(tok("\\n")) + len(tok(prompt))``; then ``+ tok("\\n") + tok(prompt)``. BOS is always
prepended. The prompt is the reference's "Given a query A and a passage B, ..." sentence; a call's
``instruction`` replaces it. Defaults: ``max_length`` 512, ``query_max_length`` ``max_length * 3 // 4``.
Sequences are left-padded to a multiple of 8 (the reference pads with the Llama tokenizer's left side).

Score: for each cutoff layer ``L`` (``start_layer <= L <= num_hidden_layers``), the hidden state after ``L``
layers goes through the final RMSNorm and the head ``lm_head[L - start_layer]`` (a 1-output linear layer, no
bias, no muP scaling) at the last token. One output column per cutoff, ascending; the forward pass stops after
the deepest requested layer (early exit), and that last layer is only computed for the scored token.
Scores of different layers are not on one scale: compare documents within one layer only. Activation for
normalised scores: sigmoid. Heads run in float32 whatever the body's dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import (
    DEFAULT_CALL,
    Activation,
    CallOptions,
    Capabilities,
    Encoded,
    FamilyLimits,
    FamilySpec,
    ModelOptions,
    clean_backend,
    collate,
    encode_plain,
    pad_token_id,
)
from rerankd.families.minicpm_model import MiniCPMConfig, MiniCPMModel, load_checkpoint, read_checkpoint
from rerankd.loading import ModelFiles

logger = logging.getLogger(__name__)

HEADS = ("lm_head.",)  # the scoring heads: float32 whatever the body's dtype

DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)
QUERY_PREFIX = "A: "
PASSAGE_PREFIX = "B: "
SEPARATOR = "\n"
DEFAULT_MAX_LENGTH = 512
PAD_MULTIPLE = 8
ARCHITECTURE = "LayerWiseMiniCPMForCausalLM"


class LayerHead(nn.Module):
    """One exit layer's scoring head (named like the checkpoint: ``lm_head.N.linear_head``)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(hidden_size, 1, bias=False)


class LayerwiseNetwork(nn.Module):
    """The MiniCPM body plus the per-layer heads, with the checkpoint's parameter names."""

    def __init__(self, config: MiniCPMConfig, start_layer: int, head_multi: bool) -> None:
        super().__init__()
        self.start_layer = start_layer
        self.model = MiniCPMModel(config)
        n_heads = config.num_hidden_layers + 1 - start_layer
        self.lm_head: nn.Module = (
            nn.ModuleList(LayerHead(config.hidden_size) for _ in range(n_heads))
            if head_multi
            else LayerHead(config.hidden_size)
        )

    def head(self, layer: int) -> nn.Linear:
        head = self.lm_head[layer - self.start_layer] if isinstance(self.lm_head, nn.ModuleList) else self.lm_head
        assert isinstance(head, LayerHead)
        return head.linear_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cutoffs: Sequence[int], rows: torch.Tensor
    ) -> torch.Tensor:
        """Float32 scores (batch, len(cutoffs)) at position ``rows[b]``; runs ``max(cutoffs)`` layers only."""
        states = self.model(input_ids, attention_mask, n_layers=max(cutoffs), keep_layers=cutoffs, rows=rows)
        columns = [
            self.head(layer)(self.model.norm(state).float()) for layer, state in zip(cutoffs, states, strict=True)
        ]
        return torch.cat(columns, dim=1)


class LayerwiseFamily:
    """bge-reranker-v2-minicpm-layerwise: per-layer scores with early exit."""

    family = "minicpm-layerwise"
    activation: Activation = "sigmoid"

    def __init__(self, network: LayerwiseNetwork, tokenizer: Any, options: ModelOptions) -> None:
        self.network = network
        self.device: torch.device = next(network.parameters()).device
        self.backend = clean_backend(tokenizer)
        max_length = options.max_length or DEFAULT_MAX_LENGTH
        self.limits = FamilyLimits(max_length=max_length, pad_side="left", pad_to_multiple_of=PAD_MULTIPLE)
        self.query_max_length = options.query_max_length or max_length * 3 // 4
        if tokenizer.bos_token_id is None:
            raise UnsupportedModel("the layerwise reranker's tokenizer has no BOS token")
        self.bos_id: int = tokenizer.bos_token_id
        self.pad_id = pad_token_id(tokenizer, "unk")
        self.start_layer = network.start_layer
        self.num_layers = network.model.config.num_hidden_layers
        self.sep_ids = self._tokens(SEPARATOR)
        self.default_prompt_ids = self._tokens(DEFAULT_PROMPT)
        default = (self.num_layers,) if options.cutoff_layers is None else options.cutoff_layers
        self.default_cutoffs = self.check_cutoffs(default)

    def weights(self) -> torch.nn.Module:
        return self.network

    def _tokens(self, text: str) -> list[int]:
        return list(encode_plain(self.backend, [text])[0].ids)

    def check_cutoffs(self, layers: Sequence[int]) -> tuple[int, ...]:
        """Sorted, de-duplicated cutoff layers, or :class:`InvalidInput` naming the valid range."""
        valid = range(self.start_layer, self.num_layers + 1)
        bad = [x for x in layers if not isinstance(x, int) or isinstance(x, bool) or x not in valid]
        if not layers or bad:
            raise InvalidInput(
                f"cutoff_layers {list(layers)} invalid: this model scores layers {self.start_layer}..{self.num_layers} "
                f"(start_layer..num_hidden_layers); got {bad or 'none'}",
                param="cutoff_layers",
            )
        return tuple(sorted(set(layers)))

    def cutoffs(self, call: CallOptions) -> tuple[int, ...]:
        return self.default_cutoffs if call.cutoff_layers is None else self.check_cutoffs(call.cutoff_layers)

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        self.cutoffs(call)  # reject bad layers before any work
        prompt_ids = self.default_prompt_ids if call.instruction is None else self._tokens(call.instruction)
        max_length = self.limits.max_length
        query_ids = self._tokens(QUERY_PREFIX + query)
        first = [self.bos_id, *query_ids[: self.query_max_length]]
        budget = max_length + len(self.sep_ids) + len(prompt_ids)
        tail = [*self.sep_ids, *prompt_ids]
        encoded = []
        for passage in encode_plain(self.backend, [PASSAGE_PREFIX + doc for doc in documents]):
            second = [*self.sep_ids, *passage.ids[:max_length]]
            excess = len(first) + len(second) - budget
            if 0 < excess < len(second):  # the reference leaves the pair alone when the passage cannot absorb it
                second = second[:-excess]
            full_length = 1 + len(query_ids) + len(passage.ids) + len(self.sep_ids) + len(tail)
            encoded.append(Encoded(input_ids=(*first, *second, *tail), full_length=full_length))
        return encoded

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        cutoffs = self.cutoffs(call)
        inputs = collate(
            batch, pad_id=self.pad_id, pad_side="left", device=self.device, pad_to_multiple_of=PAD_MULTIPLE
        )
        ids = inputs["input_ids"]
        rows = torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=self.device)
        return self.network(ids, inputs["attention_mask"], cutoffs, rows).cpu()


def _layout(files: ModelFiles) -> tuple[MiniCPMConfig, int, bool]:
    config = files.config
    head_type = config.get("head_type", "simple")
    if head_type != "simple":
        raise UnsupportedModel(
            f"{files.requested}: layerwise head_type {head_type!r} is not supported (published checkpoints use "
            "'simple': one score per layer)"
        )
    body = MiniCPMConfig.from_dict(config, causal=True)
    start_layer = int(config.get("start_layer", 8))
    if not 0 <= start_layer <= body.num_hidden_layers:
        raise UnsupportedModel(f"{files.requested}: start_layer {start_layer} outside 0..{body.num_hidden_layers}")
    return body, start_layer, bool(config.get("head_multi", True))


def load_layerwise(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> LayerwiseFamily:
    from transformers import AutoTokenizer

    body, start_layer, head_multi = _layout(files)
    with torch.device("meta"):
        network = LayerwiseNetwork(body, start_layer, head_multi)
    load_checkpoint(network, read_checkpoint(files.path), dtype, keep_fp32=HEADS)
    network.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=trust_remote_code)
    logger.debug("layerwise MiniCPM: heads for layers %d..%d", start_layer, body.num_hidden_layers)
    return LayerwiseFamily(network, tokenizer, options)


def _detect(files: ModelFiles) -> bool:
    config = files.config
    if ARCHITECTURE in (config.get("architectures") or []):
        return True
    return config.get("model_type") == "minicpm" and "start_layer" in config and "head_type" in config


SPEC = FamilySpec(
    name="minicpm-layerwise",
    summary="bge-reranker-v2-minicpm-layerwise: per-layer scores with early exit (cutoff_layers)",
    detection=f"architectures: {ARCHITECTURE} (or model_type minicpm with head_type and start_layer)",
    detect=_detect,
    load=load_layerwise,
    known_ids=("BAAI/bge-reranker-v2-minicpm-layerwise",),
    capabilities=Capabilities(fp32_heads=HEADS, layer_outputs=True),
)
