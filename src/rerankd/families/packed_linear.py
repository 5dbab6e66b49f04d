"""bfloat16 Linear layers on a CPU with their weights packed once for oneDNN, and GELU fused into the matmul.

``torch.nn.functional.linear`` in bfloat16 on a CPU already runs oneDNN's matmul, but re-lays-out the weight for it
and writes the bias into the output before each call, and the encoder's GELU then reads and writes the whole
``intermediate_size`` activation once more (in bfloat16, through float32). :class:`PackedLinear` keeps the weight
in the layout oneDNN wants (``torch.ops.mkldnn._reorder_linear_weight``, as inductor's CPU freezing does) and
calls the fused kernel (``torch.ops.mkldnn._linear_pointwise``) with the bias, and GELU as a post-op where the
encoder's ``*Intermediate`` block applies exact GELU after its ``dense`` layer.

The outputs are the same bits as ``F.linear`` for the plain layers (same kernel, same accumulation), and the GELU
is applied to the float32 accumulator before the one rounding to bfloat16 (one rounding instead of two). A row's
output does not depend on the other rows of the batch (tests/families/test_packed_linear.py). Used by the encoder
families for ``dtype=bfloat16`` on CPU with the torch backend; figures in docs/backends.md.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
from torch import nn


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """``linear`` (bfloat16, CPU) with its weight packed for oneDNN; ``activation`` "none" or "gelu" (exact)."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.in_features, self.out_features, self.activation = linear.in_features, linear.out_features, activation
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.register_buffer("packed_weight", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)
        self.post_op: tuple[str, list[float], str] = ("gelu", [], "none") if activation == "gelu" else ("none", [], "")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        kind, scalars, algorithm = self.post_op
        result: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            inputs, self.packed_weight, self.bias, kind, scalars, algorithm
        )
        return result

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


def weight_count(module: nn.Module, skip: str | None = None) -> int:
    """Elements of ``module``'s parameters and of its packed Linear weights and biases (FLOP accounting), leaving
    out the parameters whose name contains ``skip``."""
    count = sum(p.numel() for name, p in module.named_parameters() if skip is None or skip not in name)
    for child in module.modules():
        if isinstance(child, PackedLinear):
            count += child.in_features * child.out_features + (child.out_features if child.bias is not None else 0)
    return count


def _exact_gelu(module: Any) -> bool:
    return callable(module) and getattr(module, "act", None) is nn.functional.gelu


def pack_linears(model: nn.Module) -> int:
    """Replace the bfloat16 Linear layers of ``model`` (on the CPU) by :class:`PackedLinear`, fusing exact GELU
    into each ``*Intermediate`` block's ``dense``; the number of layers packed (0 where oneDNN is missing)."""
    if not available():
        return 0
    packed = 0
    for module in list(model.modules()):
        dense = getattr(module, "dense", None)
        if _packable(dense) and _exact_gelu(getattr(module, "intermediate_act_fn", None)):
            module.dense = PackedLinear(dense, "gelu")
            module.intermediate_act_fn = nn.Identity()
            packed += 1
        for name, child in list(module.named_children()):
            if _packable(child):
                setattr(module, name, PackedLinear(child))
                packed += 1
    return packed


def _packable(module: Any) -> TypeGuard[nn.Linear]:
    return type(module) is nn.Linear and module.weight.dtype == torch.bfloat16 and module.weight.device.type == "cpu"
