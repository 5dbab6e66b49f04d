"""Skip the work nobody reads: the last encoder layer of a first-token-pooled cross-encoder.

A BERT / RoBERTa / XLM-R sequence classifier reads only position 0 of the last layer (BERT's pooler and
RoBERTa's classification head both take ``hidden[:, 0]``). The other positions' last-layer outputs are
computed and thrown away. :func:`trim_last_layer` swaps that layer for :class:`FirstTokenLayer`, which uses the
same weights but computes the query, attention and feed-forward for position 0 only (keys and values still
come from every position). Same arithmetic for the row that is read; the saving is about 1/num_layers of the
forward pass (1/6 on MiniLM-L6, 1/12 on base models).

Applied only where the layout is the one described (absolute positions, no decoder, no cross-attention);
anything else keeps the stock layer.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from rerankd.families.base import ComputeShape
from rerankd.families.int8 import has_int8_layers
from rerankd.families.packed_linear import weight_count

logger = logging.getLogger(__name__)

FIRST_TOKEN_HEADS = (
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
)
# Bare encoders qualify only when their caller reads position 0 alone (a CLS-pooled bi-encoder).
BARE_ENCODERS = ("BertModel", "RobertaModel", "XLMRobertaModel")


class FirstTokenLayer(nn.Module):
    """A BERT-style encoder layer that returns only position 0: shape (batch, 1, hidden)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def first_row_parameters(self) -> int:
        """Parameters this layer applies to position 0 only (all but the key and value projections, which
        still see every position): what it saves per skipped row, for FLOP accounting."""
        layer: Any = self.layer
        attention = layer.attention.self
        shared = weight_count(attention.key) + weight_count(attention.value)
        return weight_count(self) - shared

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """Same signature as the wrapped layer; encoder-decoder arguments are not used by encoder classifiers."""
        layer: Any = self.layer
        attention = layer.attention.self
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        first = hidden_states[:, :1]
        head = attention.attention_head_size
        query = attention.query(first).view(batch, 1, -1, head).transpose(1, 2)
        key = attention.key(hidden_states).view(batch, length, -1, head).transpose(1, 2)
        value = attention.value(hidden_states).view(batch, length, -1, head).transpose(1, 2)
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask[:, :, :1, :]  # the first query row; bool or additive, as sdpa takes
        context = functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=attention.scaling
        )
        context = context.transpose(1, 2).reshape(batch, 1, -1)
        attended = layer.attention.output(context, first)
        return layer.output(layer.intermediate(attended), attended)


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """A BERT-style model's ``base_model.encoder.layer`` list, or None."""
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) > 0 else None


def first_token_layer(model: nn.Module) -> FirstTokenLayer | None:
    """The model's trimmed last layer, when :func:`trim_last_layer` replaced it."""
    layers = encoder_layers(model)
    return layers[-1] if layers is not None and isinstance(layers[-1], FirstTokenLayer) else None


def _eligible(model: nn.Module, bare: bool) -> str | None:
    """Why the model cannot be trimmed, or None when it can."""
    config = getattr(model, "config", None)
    kinds = FIRST_TOKEN_HEADS + (BARE_ENCODERS if bare else ())
    if type(model).__name__ not in kinds or config is None:
        return "not a BERT/RoBERTa/XLM-R sequence classifier" + (" or encoder" if bare else "")
    if getattr(config, "position_embedding_type", "absolute") not in ("absolute", None):
        return "relative position embeddings"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "decoder or cross-attention layout"
    if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return f"attention implementation {config._attn_implementation}"
    layers = encoder_layers(model)
    if layers is None:
        return "no encoder.layer list"
    last = layers[-1]
    parts = ("attention", "intermediate", "output")
    if not all(hasattr(last, name) for name in parts) or not hasattr(last.attention, "self"):
        return "unexpected layer structure"
    return None


def trim_last_layer(model: nn.Module, *, first_token_pooling: bool = False) -> bool:
    """Replace the last encoder layer by a :class:`FirstTokenLayer` when that is exact; True if done.

    ``first_token_pooling=True`` declares that the caller reads only position 0 of a bare encoder's output (CLS
    pooling), which makes bare BERT/RoBERTa/XLM-R encoders eligible too; their ``last_hidden_state`` then has
    length 1."""
    reason = _eligible(model, first_token_pooling)
    if reason is not None:
        logger.debug("keeping the full last layer: %s", reason)
        return False
    layers = encoder_layers(model)
    assert layers is not None  # _eligible checked it
    if not isinstance(layers[-1], FirstTokenLayer):
        layers[-1] = FirstTokenLayer(layers[-1])
    return True


def dense_shape(model: object) -> ComputeShape | None:
    """The dense work of an encoder family's torch model (None for ONNX sessions and int8 models, whose
    arithmetic a float matmul peak does not describe)."""
    if not isinstance(model, nn.Module) or has_int8_layers(model):
        return None
    params = weight_count(model, skip="embed")
    config = getattr(model, "config", None)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    trimmed = first_token_layer(model)
    return ComputeShape(params, layers, hidden, trimmed.first_row_parameters() if trimmed is not None else 0)
