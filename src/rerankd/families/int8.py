"""Row-wise int8 for an encoder's Linear layers (torch, fbgemm): per-token-row activation ranges, per-channel
int8 weights, SmoothQuant-style input scaling, a few outlier input channels in float, and the activations'
rounding error carried by a second int8 pass, all from a short calibration pass.

Why: with one activation scale per batch (``torch.ao``'s and onnxruntime's dynamic quantisation), a token row with
a large value coarsens every other row, and a pair's score moves with its batch companions. Here:

1. the :data:`FLOAT_CHANNELS` input channels with the largest calibrated ``max|x|`` (at most 1/8 of them) skip
   int8: ``x[:, outliers] @ W[:, outliers]`` in float64 (row-exact, ~2% of a 1536-wide layer's work).
2. ``x_s = x / s`` per remaining input channel (SmoothQuant, ``s_k = max|x_k|^a / max|W_k|^(1-a)``, ``a = 0.5``,
   ranges from one float run over :data:`CALIBRATION_PAIRS`); the weight columns are multiplied by ``s``, so
   ``x_s @ W_s = x @ W``. ``W_s`` is stored as int8 with one scale per output channel.
3. per token row, ``lo = min_k x_s`` and ``span = max_k x_s - lo``; ``x_n = (x_s - lo) / span`` lies in [0, 1],
   so every row uses the whole uint8 range, whatever the other rows hold.
4. fbgemm's int8 matmul with a *fixed* input scale (``linear_with_input_q_dq_qweight_dq_output_fp32``,
   ``1 / levels``, zero point 0): the quantisation of a row never depends on its batch (``linear_dynamic`` would
   pick one scale per tensor). ``levels`` is 255 on CPUs with VNNI, 127 elsewhere (AVX2's u8*s8 pair sums
   saturate int16 above that). With ``passes=2`` (default) the rounding residual ``x_n * levels - round(...)``,
   shifted into [0, 1], goes through the same matmul as extra rows: activations carry ~16 bits, int8 weights
   remain the only coarse part.
5. ``y = span * y_n + lo * rowsum(W_s) + bias + outlier part``.

Embeddings, LayerNorm, softmax and q.k stay float32. Measured figures: benchmarks/results/int8-rowwise-minilm.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rerankd.errors import UnsupportedModel
from rerankd.hardware import cpu_flags

SMOOTH_ALPHA = 0.5
FLOAT_CHANNELS = 32  # outlier input channels per Linear kept in float (at most in_features // 8)
PASSES = 2  # int8 matmul passes per activation row: 1 = 8-bit activations, 2 = + the rounding residual
EPS = 1e-12
ENGINE = "fbgemm"  # the x86 int8 engine whose packed weights the fixed-scale matmul runs on
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}

# Calibration texts: activation ranges per input channel for the smoothing factors (not for the int8 ranges,
# which are computed per token row at run time). General English, several topics and lengths.
CALIBRATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("what is panda?", "The giant panda is a bear species endemic to China, living in bamboo forests."),
    ("what is panda?", "Pandas is a Python library for data analysis built on NumPy arrays."),
    ("capital of France", "Paris is the capital and most populous city of France, on the river Seine."),
    ("capital of France", "Berlin is the capital of Germany and its largest city by population."),
    ("how do vaccines work?", "Vaccines train the immune system to recognise a pathogen without causing disease."),
    ("how do vaccines work?", "The stock market closed higher on Friday after strong quarterly earnings reports."),
    ("best way to learn guitar", "Practice chords daily, start slowly and learn songs you enjoy playing."),
    ("symptoms of the flu", "Fever, cough, sore throat, muscle aches and fatigue are common flu symptoms."),
    ("who painted the Mona Lisa", "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century in Italy."),
    ("rust borrow checker", "The borrow checker enforces that references never outlive the data they point to."),
    (
        "how to reduce memory usage in python",
        "Use generators instead of lists, __slots__ on small classes, and release references to large arrays "
        "early; profile with tracemalloc to find what allocates most.",
    ),
    (
        "history of the printing press",
        "Johannes Gutenberg introduced movable-type printing to Europe around 1440. Within decades presses "
        "spread to hundreds of cities, books became cheaper, and literacy rose across the continent.",
    ),
    ("hi", "hello"),
    ("weather tomorrow", "Expect light rain in the morning, clearing by noon with highs of 18 degrees."),
    ("quantum computing", "Qubits can hold superpositions of states, and entanglement links their outcomes."),
    ("cheap flights to Tokyo", "Compare fares from 120 airlines; prices from $540 return, updated 2 hours ago."),
)


def activation_levels(flags: set[str] | None = None) -> int:
    """The uint8 levels per row: 255 where fbgemm accumulates u8*s8 in int32 (VNNI), 127 where AVX2's pairwise
    int16 sums would saturate."""
    return 255 if VNNI_FLAGS & (cpu_flags() if flags is None else flags) else 127


@contextmanager
def fbgemm_engine() -> Iterator[None]:
    """Pack weights for fbgemm explicitly (the global default, ``x86``, may pick onednn), then restore it."""
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise UnsupportedModel(
            f"quantize='int8' on the torch backend needs torch's {ENGINE} engine (x86 CPUs); this torch has "
            f"{torch.backends.quantized.supported_engines}: use backend='onnx' with quantize='int8'"
        )
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def smoothing(input_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = SMOOTH_ALPHA) -> torch.Tensor:
    """SmoothQuant factors ``s_k`` (one per input channel): divide the activations, multiply the weights."""
    scale = input_absmax.clamp(min=1e-5) ** alpha / weight_absmax.clamp(min=1e-5) ** (1 - alpha)
    return scale.clamp(min=1e-2, max=1e2)


def outlier_channels(input_absmax: torch.Tensor | None, width: int, count: int) -> torch.Tensor:
    """The (sorted) input channels with the largest calibrated ``max|x|``: at most ``width // 8`` of them."""
    count = min(count, width // 8)
    if input_absmax is None or count <= 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.topk(input_absmax, count).indices.sort().values


def pack_int8(weight: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """fbgemm's packed int8 weight (one scale per output channel) and the dequantised weight's row sums."""
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=EPS).double()
    zeros = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings(), fbgemm_engine():
        warnings.simplefilter("ignore")  # quantized tensor creation deprecation notice
        quantized = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(quantized, None)
    return packed, quantized.dequantize().sum(dim=1)


class RowwiseInt8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and per-token-row activation ranges (fbgemm);
    ``float_channels`` outlier input channels in float, ``passes`` int8 passes per row (module docstring)."""

    fixed_dtype = True  # int8 weights: the module cannot be cast to another float dtype
    bias: torch.Tensor
    row_sums: torch.Tensor
    inverse_smooth: torch.Tensor | None
    outlier_index: torch.Tensor
    int8_index: torch.Tensor
    outlier_weight: torch.Tensor

    def __init__(
        self,
        linear: nn.Linear,
        input_absmax: torch.Tensor | None,
        levels: int,
        float_channels: int = FLOAT_CHANNELS,
        passes: int = PASSES,
    ) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        outliers = outlier_channels(input_absmax, weight.shape[1], float_channels)
        kept = torch.ones(weight.shape[1], dtype=torch.bool)
        kept[outliers] = False
        int8_index = kept.nonzero().squeeze(1)
        self.register_buffer("outlier_index", outliers)
        self.register_buffer("int8_index", int8_index)
        self.register_buffer("outlier_weight", weight[:, outliers].double().T.contiguous())
        weight = weight[:, int8_index]
        absmax = None if input_absmax is None else input_absmax[int8_index]
        smooth = None if absmax is None else smoothing(absmax, weight.abs().amax(dim=0))
        self.packed, row_sums = pack_int8(weight if smooth is None else weight * smooth)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(weight.shape[0])
        self.register_buffer("bias", bias)
        self.register_buffer("row_sums", row_sums)
        self.register_buffer("inverse_smooth", None if smooth is None else 1.0 / smooth)
        self.levels, self.passes = levels, passes
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outside = None
        if self.outlier_index.numel():
            outside = (x.index_select(-1, self.outlier_index).double() @ self.outlier_weight).float()
            x = x.index_select(-1, self.int8_index)
        if self.inverse_smooth is not None:
            x = x * self.inverse_smooth
        low = x.amin(dim=-1, keepdim=True)
        span = (x.amax(dim=-1, keepdim=True) - low).clamp(min=EPS)
        product = self.int8_product((x - low) / span)
        out = torch.addcmul(torch.addcmul(self.bias, low, self.row_sums), product, span)
        return out if outside is None else out + outside

    def int8_product(self, normalised: torch.Tensor) -> torch.Tensor:
        """``normalised @ W_s.T`` through fbgemm (inputs in [0, 1]); a second pass adds the rounding residual."""
        matmul = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
        scale = 1.0 / self.levels
        if self.passes == 1:
            return matmul(normalised, scale, 0, self.packed)
        steps = normalised * self.levels
        first = torch.round(steps)
        residual = steps - first + 0.5  # the rounding error, shifted into [0, 1]
        high, rest = matmul(torch.cat([first * scale, residual]), scale, 0, self.packed).chunk(2)
        return high + (rest - 0.5 * self.row_sums) * scale


def has_int8_layers(model: nn.Module) -> bool:
    """True when ``model`` holds int8 layers (this module's or torch.ao's): its dtype is fixed."""
    return any(getattr(m, "fixed_dtype", False) or ".quantized" in type(m).__module__ for m in model.modules())


def input_absmax(model: nn.Module, names: Iterable[str], calibrate: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of the named Linear layers over one calibration run."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            value = inputs[0].detach().float().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
            seen[name] = torch.maximum(seen[name], value) if name in seen else value

        return record

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        with torch.inference_mode():
            calibrate()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def quantize_rowwise(
    model: nn.Module,
    calibrate: Callable[[], Any],
    levels: int | None = None,
    float_channels: int = FLOAT_CHANNELS,
    passes: int = PASSES,
) -> nn.Module:
    """Replace the encoder layers' Linear modules (not the classifier or pooler head) with
    :class:`RowwiseInt8Linear`, in place; ``calibrate`` runs the float model once on calibration inputs."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and ".layer." in name]
    ranges = input_absmax(model, names, calibrate)
    levels = activation_levels() if levels is None else levels
    for name in names:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = RowwiseInt8Linear(getattr(parent, attribute), ranges.get(name), levels, float_channels, passes)
        setattr(parent, attribute, layer)
    return model
