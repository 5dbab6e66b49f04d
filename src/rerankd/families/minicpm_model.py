"""rerankd's own MiniCPM (v1) transformer body, in plain torch.

transformers 5 ships no MiniCPM v1 class and rerankd runs no remote code, so the two MiniCPM reranker families
(``layerwise`` and ``minicpm``) share this implementation. The math follows the published MiniCPM design:

- token embeddings multiplied by ``scale_emb``;
- pre-norm decoder layers whose attention and MLP branches are each multiplied by
  ``scale_depth / sqrt(num_hidden_layers)`` before being added to the residual stream;
- RMSNorm with the variance computed in float32; rotary position embeddings (``rope_theta``, default 1e4)
  computed and applied in float32, so bf16/fp16 weights keep accurate positions;
- grouped-query attention when ``num_key_value_heads < num_attention_heads``; attention through
  ``scaled_dot_product_attention``; causal (bge layerwise reranker) or bidirectional (MiniCPM-Reranker).

Positions are counted over real tokens only (``cumsum(attention_mask) - 1``), so a sequence gets the same
positions whatever padding its batch needs; with rotary embeddings this is the same math as the reference's
``arange`` positions (only relative offsets matter) and makes scores batch-invariant.

Early exit: :meth:`MiniCPMModel.forward` runs ``n_layers`` layers and stops; it returns the hidden state after
each requested layer, optionally only at one position per row. When that position is given, the last layer
computes attention queries and the MLP for that one row only.

Parameter names match the published checkpoints' state-dict keys (``embed_tokens``, ``layers.N.self_attn.q_proj``,
``layers.N.mlp.gate_proj``, ``layers.N.input_layernorm``, ``norm``, ...) so safetensors weights load with a strict
key check (:func:`load_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rerankd.errors import UnsupportedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiniCPMConfig:
    """The architecture numbers of a MiniCPM checkpoint (read from its config.json)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    scale_emb: float = 1.0
    scale_depth: float = 1.0
    dim_model_base: float = 1.0
    attention_bias: bool = False
    causal: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def branch_scale(self) -> float:
        """Multiplier of every residual branch (MiniCPM's depth scaling)."""
        return self.scale_depth / math.sqrt(self.num_hidden_layers)

    @classmethod
    def from_dict(cls, config: dict[str, Any], *, causal: bool) -> MiniCPMConfig:
        _check_supported(config)
        heads = int(config["num_attention_heads"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            scale_emb=float(config.get("scale_emb", 1.0)),
            scale_depth=float(config.get("scale_depth", 1.0)),
            dim_model_base=float(config.get("dim_model_base", 1.0)),
            attention_bias=bool(config.get("attention_bias", False)),
            causal=causal,
        )


def _check_supported(config: dict[str, Any]) -> None:
    scaling = config.get("rope_scaling")
    if isinstance(scaling, dict) and (scaling.get("type") or scaling.get("rope_type") or "default") != "default":
        raise UnsupportedModel(f"MiniCPM with rope_scaling {scaling} is not supported (published rerankers use none)")
    activation = config.get("hidden_act", "silu")
    if activation not in ("silu", "swish"):
        raise UnsupportedModel(f"MiniCPM with hidden_act={activation!r} is not supported (expected silu)")
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    if config["hidden_size"] % heads or heads % kv_heads:
        raise UnsupportedModel("MiniCPM config: hidden_size must divide into heads and heads into key/value heads")


class MiniCPMRMSNorm(nn.Module):
    """RMSNorm; the variance and the normalisation are computed in float32, the scale in the model dtype."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


@dataclass(frozen=True)
class AttentionContext:
    """Per-forward data shared by every layer: rotary tables, key padding and masking mode."""

    cos: torch.Tensor  # (batch, 1, seq, head_dim), float32
    sin: torch.Tensor
    key_valid: torch.Tensor  # (batch, seq) bool
    padded: bool
    causal: bool

    def full_mask(self) -> torch.Tensor | None:
        """Boolean (batch, 1, seq, seq) mask, or None when SDPA's own causal/no-mask path is exact."""
        if not self.padded:
            return None
        seq = self.key_valid.shape[1]
        allowed = self.key_valid[:, None, None, :].expand(-1, 1, seq, seq)
        if self.causal:
            allowed = allowed & torch.ones(seq, seq, dtype=torch.bool, device=allowed.device).tril()
        # Padding rows would otherwise see no key at all (NaN rows); let every row see itself.
        return allowed | torch.eye(seq, dtype=torch.bool, device=allowed.device)

    def row_mask(self, rows: torch.Tensor) -> torch.Tensor:
        """Boolean (batch, 1, 1, seq) mask for one query row per sequence (``rows`` indexes the sequence)."""
        seq = self.key_valid.shape[1]
        allowed = self.key_valid
        if self.causal:
            allowed = allowed & (torch.arange(seq, device=rows.device)[None, :] <= rows[:, None])
        return allowed[:, None, None, :]


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (batch, 1, seq, head_dim) in float32 for integer positions (batch, seq)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[b, rows[b]]`` for (batch, seq, ...) tensors, keeping a length-1 sequence axis."""
    return x[torch.arange(x.shape[0], device=x.device), rows].unsqueeze(1)


class MiniCPMAttention(nn.Module):
    def __init__(self, config: MiniCPMConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=bias)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], heads, self.head_dim).transpose(1, 2)

    def _expand_kv(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.heads // self.kv_heads
        if groups == 1:
            return x
        batch, _, seq, dim = x.shape
        return x[:, :, None].expand(batch, self.kv_heads, groups, seq, dim).reshape(batch, self.heads, seq, dim)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over ``x`` (batch, seq, hidden); with ``rows``, queries only at ``x[b, rows[b]]``."""
        keys = _rotate(self._split(self.k_proj(x), self.kv_heads), ctx.cos, ctx.sin)
        values = self._split(self.v_proj(x), self.kv_heads)
        if rows is None:
            queries = _rotate(self._split(self.q_proj(x), self.heads), ctx.cos, ctx.sin)
            mask = ctx.full_mask()
            causal = ctx.causal and mask is None
        else:
            cos, sin = gather_rows(ctx.cos[:, 0], rows)[:, None], gather_rows(ctx.sin[:, 0], rows)[:, None]
            queries = _rotate(self._split(self.q_proj(gather_rows(x, rows)), self.heads), cos, sin)
            mask, causal = ctx.row_mask(rows), False
        out = F.scaled_dot_product_attention(
            queries, self._expand_kv(keys), self._expand_kv(values), attn_mask=mask, is_causal=causal
        )
        return self.o_proj(out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1))


class MiniCPMMLP(nn.Module):
    def __init__(self, config: MiniCPMConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MiniCPMDecoderLayer(nn.Module):
    def __init__(self, config: MiniCPMConfig) -> None:
        super().__init__()
        self.self_attn = MiniCPMAttention(config)
        self.mlp = MiniCPMMLP(config)
        self.input_layernorm = MiniCPMRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = MiniCPMRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.branch_scale = config.branch_scale

    def forward(self, x: torch.Tensor, ctx: AttentionContext, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One layer; with ``rows`` only those positions are computed and (batch, 1, hidden) is returned."""
        attended = self.self_attn(self.input_layernorm(x), ctx, rows)
        residual = x if rows is None else gather_rows(x, rows)
        x = residual + attended * self.branch_scale
        return x + self.mlp(self.post_attention_layernorm(x)) * self.branch_scale


class MiniCPMModel(nn.Module):
    """Embeddings, decoder layers and the final norm (the ``model.`` part of a MiniCPM checkpoint)."""

    def __init__(self, config: MiniCPMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MiniCPMDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = MiniCPMRMSNorm(config.hidden_size, config.rms_norm_eps)

    def context(self, attention_mask: torch.Tensor) -> AttentionContext:
        key_valid = attention_mask.bool()
        positions = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        cos, sin = rotary_tables(positions, self.config.head_dim, self.config.rope_theta)
        padded = not bool(key_valid.all())
        return AttentionContext(cos=cos, sin=sin, key_valid=key_valid, padded=padded, causal=self.config.causal)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        n_layers: int | None = None,
        keep_layers: Sequence[int] | None = None,
        rows: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Run the first ``n_layers`` layers (default: all) and stop.

        Returns the un-normalised hidden state after each layer count in ``keep_layers`` (ascending; default
        ``[n_layers]``; 0 = the scaled embeddings): (batch, seq, hidden) each, or (batch, hidden) taken at
        position ``rows[b]`` of each sequence when ``rows`` is given. Apply :attr:`norm` yourself.
        """
        total = self.config.num_hidden_layers if n_layers is None else n_layers
        keep = sorted(set(keep_layers)) if keep_layers is not None else [total]
        if not 0 <= total <= self.config.num_hidden_layers or not keep or keep[0] < 0 or keep[-1] > total:
            raise ValueError(f"cannot keep layers {keep} of {total} run (model has {self.config.num_hidden_layers})")
        ctx = self.context(attention_mask)
        hidden = self.embed_tokens(input_ids) * self.config.scale_emb
        kept: list[torch.Tensor] = []
        for index in range(total + 1):
            if index > 0:
                last_kept = index == total and index in keep
                only_rows = rows if last_kept else None
                hidden = self.layers[index - 1](hidden, ctx, only_rows)
                if only_rows is not None:
                    kept.append(hidden[:, 0])
                    break
            if index in keep:
                kept.append(hidden if rows is None else gather_rows(hidden, rows)[:, 0])
        return kept


def read_checkpoint(folder: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: ``*.safetensors`` (single or sharded) or, failing that, ``*.bin``."""
    from safetensors.torch import load_file

    files = _weight_files(folder, "model.safetensors", "safetensors")
    if files:
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(str(file), device=str(device)))
        return state
    files = _weight_files(folder, "pytorch_model.bin", "bin")
    if not files:
        raise UnsupportedModel(f"{folder} has no *.safetensors or pytorch_model*.bin weights")
    logger.warning("%s has no safetensors weights; loading pickle weights", folder)
    state = {}
    for file in files:
        state.update(torch.load(file, map_location=device, weights_only=True, mmap=True))
    return state


def _weight_files(folder: Path, single: str, suffix: str) -> list[Path]:
    index = folder / f"{single}.index.json"
    if index.is_file():
        with index.open(encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        return [folder / shard for shard in shards]
    if (folder / single).is_file():
        return [folder / single]
    return sorted(folder.glob(f"*.{suffix}"))


def load_checkpoint(
    module: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, keep_fp32: Sequence[str] = ()
) -> None:
    """Assign ``state`` to ``module``'s parameters with a strict key and shape check.

    ``module`` may live on the meta device (no memory is allocated twice). Tensors are cast to ``dtype``
    except those whose name starts with one of ``keep_fp32`` (small scoring heads stay float32).
    """
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UnsupportedModel(
            f"checkpoint does not match the {type(module).__name__} layout: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}"
        )
    cast = {
        name: tensor.float() if name.startswith(tuple(keep_fp32)) else tensor.to(dtype)
        for name, tensor in state.items()
    }
    try:
        module.load_state_dict(cast, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise UnsupportedModel(f"checkpoint does not match its config.json: {exc}") from exc


def _few(names: list[str], limit: int = 6) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
