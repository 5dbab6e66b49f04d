"""rerankd's own Gemma-2 body for bge-reranker-v2.5-gemma2-lightweight, in plain torch, with token compression.

The reference (FlagEmbedding's ``models/gemma_model.py``, ``CostWiseGemmaModel``) is transformers-4 code that
transformers 5 cannot import, and its layer loop is not one transformers exposes (compression changes the sequence
length between layers), so rerankd carries the body itself. The math is Gemma-2's as that reference runs it:

- token embeddings multiplied by ``sqrt(hidden_size)`` (the factor rounded to the model dtype);
- sandwich-normed layers: ``h + post_attn_norm(attn(input_norm(h)))``, then
  ``h + post_ffw_norm(mlp(pre_ffw_norm(h)))``; RMSNorm in float32 with a ``(1 + weight)`` scale;
- attention with ``query_pre_attn_scalar ** -0.5`` scaling, grouped key/value heads, rotary positions (``rope_theta``)
  and, on even layers, a sliding window of ``sliding_window`` tokens; MLP ``down(gelu_tanh(gate(x)) * up(x))``;
- attention-logit soft-capping is NOT applied: the reference model class declares SDPA support, so transformers
  4.46 runs ``Gemma2SdpaAttention``, which drops ``attn_logit_softcapping`` (the final-logit cap is applied by the
  family). :data:`ATTENTION_SOFTCAP` switches it on for checkpoints meant to run with it.

Token compression (:func:`compress_tokens`): before each layer in ``compress_layers`` (never layer 0) the passage
tokens of every row (between the query part and the trailing prompt part) are averaged in consecutive windows of
``compress_ratio`` tokens (the last window over the tokens it has); query and prompt states are kept; positions
restart at 0 over the shorter sequence. Hidden states are read after ``L`` layers for each cutoff ``L`` (before the
compression at that layer), and the forward pass stops after the deepest cutoff (early exit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rerankd.errors import UnsupportedModel

ATTENTION_SOFTCAP = False  # the reference's inference path (SDPA under transformers 4.46) does not soft-cap


@dataclass(frozen=True)
class Gemma2Config:
    """The architecture numbers of a Gemma-2 checkpoint (read from its config.json)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    query_pre_attn_scalar: float = 256.0
    sliding_window: int | None = 4096
    attn_logit_softcapping: float | None = None
    attention_bias: bool = False

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Gemma2Config:
        activation = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        if activation not in ("gelu_pytorch_tanh", "gelu_tanh", "gelu"):
            raise UnsupportedModel(f"Gemma-2 with activation {activation!r} is not supported")
        scaling = config.get("rope_scaling")
        if isinstance(scaling, dict) and (scaling.get("rope_type") or scaling.get("type") or "default") != "default":
            raise UnsupportedModel(f"Gemma-2 with rope_scaling {scaling} is not supported")
        heads = int(config["num_attention_heads"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            query_pre_attn_scalar=float(config.get("query_pre_attn_scalar", 256)),
            sliding_window=config.get("sliding_window"),
            attn_logit_softcapping=config.get("attn_logit_softcapping"),
            attention_bias=bool(config.get("attention_bias", False)),
        )


class Gemma2RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Gemma2Attention(nn.Module):
    def __init__(self, config: Gemma2Config, layer: int) -> None:
        super().__init__()
        self.config = config
        heads, kv, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, heads * dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv * dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv * dim, bias=bias)
        self.o_proj = nn.Linear(heads * dim, config.hidden_size, bias=bias)
        self.sliding = layer % 2 == 0 and config.sliding_window is not None

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        config = self.config
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, -1, config.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, -1, config.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, -1, config.head_dim).transpose(1, 2)
        cos, sin = rotary
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        scale = config.query_pre_attn_scalar**-0.5
        groups = config.num_attention_heads // config.num_key_value_heads
        softcap = config.attn_logit_softcapping if ATTENTION_SOFTCAP else None
        # CPU SDPA reads grouped key/value heads in place (no repeated copies, the same numbers); elsewhere a masked
        # enable_gqa call would fall back to the math kernel, so the heads are repeated.
        in_place = groups > 1 and softcap is None and x.device.type == "cpu"
        if groups > 1 and not in_place:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if softcap:
            scores = torch.tanh((q @ k.transpose(2, 3)) * scale / softcap) * softcap + mask
            out = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=in_place)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class Gemma2MLP(nn.Module):
    def __init__(self, config: Gemma2Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Gemma2DecoderLayer(nn.Module):
    def __init__(self, config: Gemma2Config, layer: int) -> None:
        super().__init__()
        self.self_attn = Gemma2Attention(config, layer)
        self.mlp = Gemma2MLP(config)
        eps = config.rms_norm_eps
        self.input_layernorm = Gemma2RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = Gemma2RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = Gemma2RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = Gemma2RMSNorm(config.hidden_size, eps)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], masks: Masks) -> torch.Tensor:
        mask = masks.sliding if self.self_attn.sliding else masks.full
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), rotary, mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


@dataclass(frozen=True)
class Masks:
    """Additive attention masks ``(batch, 1, seq, seq)``: causal + key padding, and that with the sliding window."""

    full: torch.Tensor
    sliding: torch.Tensor


def attention_masks(attention_mask: torch.Tensor, dtype: torch.dtype, window: int | None) -> Masks:
    """The sliding mask is the full one (not a copy) when the window covers the whole sequence."""
    seq = attention_mask.shape[1]
    steps = torch.arange(seq, device=attention_mask.device)
    allowed = (steps[None, :] <= steps[:, None]) & attention_mask[:, None, None, :].bool()
    lowest = torch.finfo(dtype).min
    full = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device).masked_fill(~allowed, lowest)
    if window is None or window >= seq:
        return Masks(full, full)
    near = (steps[:, None] - steps[None, :]) < window
    return Masks(full, full.masked_fill(~near, lowest))


def rotary_tables(seq: int, config: Gemma2Config, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """cos/sin ``(1, 1, seq, head_dim)`` for positions ``0..seq-1``, computed in float32, cast to ``dtype``."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim))
    freqs = torch.arange(seq, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]


@dataclass(frozen=True)
class Spans:
    """Per row: tokens before the passage (query part) and after it (prompt part), ``(batch,)`` long tensors."""

    query: torch.Tensor
    prompt: torch.Tensor


def compress_tokens(
    hidden: torch.Tensor, attention_mask: torch.Tensor, spans: Spans, ratio: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each row's passage states in windows of ``ratio`` tokens; keep query and prompt states (right padding).

    Returns the new ``(batch, seq', hidden)`` states (zeros after each row's end) and the new attention mask.
    """
    lengths = attention_mask.sum(dim=1)
    passage = lengths - spans.query - spans.prompt
    kept = (passage + ratio - 1) // ratio
    final = spans.query + kept + spans.prompt
    out = hidden.new_zeros((hidden.shape[0], int(final.max()), hidden.shape[-1]))
    for row in range(hidden.shape[0]):
        q, p, k, t = int(spans.query[row]), int(passage[row]), int(kept[row]), int(spans.prompt[row])
        out[row, :q] = hidden[row, :q]
        if p > 0:
            states = hidden[row, q : q + p]
            padded = torch.cat([states, states.new_zeros((k * ratio - p, states.shape[-1]))]).view(k, ratio, -1)
            counts = torch.full((k,), ratio, dtype=states.dtype, device=states.device)
            counts[-1] = p - (k - 1) * ratio
            out[row, q : q + k] = (padded * (1.0 / counts)[:, None, None]).sum(dim=1)
        out[row, q + k : q + k + t] = hidden[row, q + p : q + p + t]
    steps = torch.arange(out.shape[1], device=hidden.device)
    return out, (steps[None, :] < final[:, None]).to(attention_mask.dtype)


class Gemma2Body(nn.Module):
    """Embeddings, decoder layers and the final norm, with the checkpoint's parameter names (under ``model.``)."""

    def __init__(self, config: Gemma2Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Gemma2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Gemma2RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cutoffs: Sequence[int],
        compression: tuple[int, frozenset[int]] | None,
        spans: Spans,
    ) -> list[torch.Tensor]:
        """Final-normed states at each row's last real token after each layer in ``cutoffs`` (ascending), running
        ``max(cutoffs)`` layers; ``compression`` is ``(ratio, layers)`` or None."""
        hidden = self.embed_tokens(input_ids)
        hidden = hidden * torch.tensor(math.sqrt(self.config.hidden_size), dtype=hidden.dtype)
        masks = attention_masks(attention_mask, hidden.dtype, self.config.sliding_window)
        rotary = rotary_tables(hidden.shape[1], self.config, hidden.dtype, hidden.device)
        picked: list[torch.Tensor] = []
        for index in range(max(cutoffs) + 1):
            if index in cutoffs:
                last = attention_mask.sum(dim=1) - 1
                picked.append(self.norm(hidden[torch.arange(hidden.shape[0], device=hidden.device), last]))
            if index == max(cutoffs):
                break
            if compression is not None and index in compression[1] and index != 0:
                hidden, attention_mask = compress_tokens(hidden, attention_mask, spans, compression[0])
                masks = attention_masks(attention_mask, hidden.dtype, self.config.sliding_window)
                rotary = rotary_tables(hidden.shape[1], self.config, hidden.dtype, hidden.device)
            hidden = self.layers[index](hidden, rotary, masks)
        return picked
