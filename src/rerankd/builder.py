"""Loading orchestration: model name + :class:`LoadOptions` -> a :class:`LoadedModel` the facade serves.

Steps: resolve the device and dtype, find the model's files, detect its family, check the options against the
family's declared capabilities, load it (in float32 first when the ``dtype="auto"`` guard will judge a reduced
dtype), and run the guard. :meth:`rerankd.Reranker.from_pretrained` is the friendly front; the CLI and the
server build :class:`LoadOptions` from :class:`~rerankd.settings.Settings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from rerankd.errors import InvalidInput
from rerankd.families.base import FAMILY_CHOICES, Family, FamilySpec, ModelOptions
from rerankd.families.encoder_backend import check_backend
from rerankd.families.onnx_runtime import find_graph
from rerankd.families.packed_linear import pack_linears
from rerankd.jobs import Defaults, ScoreOptions, call_options, prepare_pairs, primary_score
from rerankd.loading import ModelFiles, Source, resolve_model
from rerankd.registry import detect_family, families
from rerankd.runtime.devices import configure_cpu_threads, resolve_device, resolve_dtype
from rerankd.runtime.dtype_guard import PROBE_PAIRS, Agreement, check_loaded, float32_fits
from rerankd.runtime.guard_cache import VerdictKey, recall, remember
from rerankd.runtime.planner import TokenBudget
from rerankd.runtime.worker import FamilyWorker, run_planned
from rerankd.validation import check_pairs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchOptions:
    """Where a model's files come from (see :mod:`rerankd.loading`)."""

    source: Source = "auto"
    revision: str | None = None
    cache_dir: str | None = None
    local_files_only: bool = False
    trust_remote_code: bool = False


@dataclass(frozen=True)
class LoadOptions:
    """Every load-time choice: device/dtype and run-time limits here, the family's own choices in ``model``
    (:class:`~rerankd.families.base.ModelOptions`), where files come from in ``fetch``."""

    device: str | torch.device = "auto"
    dtype: str | torch.dtype = "auto"
    family: str | None = None
    normalize: bool = True
    truncate: bool = True
    batch_tokens: int | None = None
    max_batch_size: int | None = None
    dtype_guard: bool = True
    # Every input runs in a forward pass of its own (one row, no padding): a pair's score is bit-identical
    # whatever it is batched with, in any dtype, at the cost of batching's throughput (docs/backends.md).
    deterministic: bool = False
    model: ModelOptions = field(default_factory=ModelOptions)
    fetch: FetchOptions = field(default_factory=FetchOptions)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> LoadOptions:
        """Options from flat keywords (``from_pretrained``'s), each routed to the dataclass that owns it."""
        own = {f.name for f in fields(cls)} - {"model", "fetch"}
        model_keys = {f.name for f in fields(ModelOptions)}
        fetch_keys = {f.name for f in fields(FetchOptions)}
        unknown = sorted(set(kwargs) - own - model_keys - fetch_keys)
        if unknown:
            raise TypeError(f"unexpected load option(s): {', '.join(unknown)}")
        model_kw = {k: v for k, v in kwargs.items() if k in model_keys}
        if model_kw.get("cutoff_layers") is not None:
            model_kw["cutoff_layers"] = call_options(None, model_kw["cutoff_layers"]).cutoff_layers
        for key in ("compress_layers", "score_weights"):  # lists from keywords or JSON: hashable like the rest
            if isinstance(model_kw.get(key), list):
                model_kw[key] = tuple(model_kw[key])
        return cls(
            **{k: v for k, v in kwargs.items() if k in own},
            model=ModelOptions(**model_kw),
            fetch=FetchOptions(**{k: v for k, v in kwargs.items() if k in fetch_keys}),
        )

    def flat(self) -> dict[str, Any]:
        """The options as flat keywords (the inverse of :meth:`from_kwargs`)."""
        top = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "fetch")}
        return {**top, **asdict(self.model), **asdict(self.fetch)}

    def with_changes(self, **kwargs: Any) -> LoadOptions:
        return self.from_kwargs(**{**self.flat(), **kwargs})


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
    deterministic: bool = False  # one input per forward pass: scores independent of batch companions


@dataclass(frozen=True)
class LoadedModel:
    """A family ready to run, with what the facade needs around it."""

    spec: FamilySpec
    family: Family
    worker: FamilyWorker
    info: ModelInfo
    budget: TokenBudget
    defaults: Defaults
    options: ModelOptions = field(default_factory=ModelOptions)  # the family's load-time choices it was built with


def default_budget(device: torch.device) -> TokenBudget:
    """Token budget per forward pass: modest on CPU (cache-friendly), large on accelerators."""
    return TokenBudget(max_tokens=8192, max_batch_size=128) if device.type == "cpu" else TokenBudget(65536, 512)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers draws a "Loading weights" bar on stderr for every load; a library never prints, so it is off
    while rerankd loads (and back as it was afterwards: the caller's own transformers use is theirs)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_quietly(
    spec: FamilySpec, files: ModelFiles, device: torch.device, dtype: torch.dtype, options: LoadOptions
) -> Family:
    with _no_progress_bars():
        return spec.load(files, device, dtype, options.model, options.fetch.trust_remote_code)


def load_model(name: str, options: LoadOptions) -> LoadedModel:
    """Load ``name`` (folder, packaged model, hub id or ``modelscope:<id>``) as ``options`` say."""
    started = time.perf_counter()
    requested = _requested_device(options.device)
    if requested is not None:  # option/device conflicts are the user's to fix, whatever this machine has
        check_backend(options.model, requested, torch.float32)
    device = resolve_device(options.device)
    if device.type == "cpu":
        configure_cpu_threads()
    files = resolve_model(
        name, source=options.fetch.source, revision=options.fetch.revision, cache_dir=options.fetch.cache_dir,
        local_files_only=options.fetch.local_files_only,
    )  # fmt: skip
    options = _onnx_only_folder(files, options)
    converted = options.model.backend != "torch" or options.model.quantize is not None
    dtype = resolve_dtype("float32" if converted and options.dtype == "auto" else options.dtype, device)
    spec = detect_family(files, options.family)
    _check_capabilities(spec, options.model)
    check_backend(options.model, device, dtype)
    guarded = options.dtype == "auto" and options.dtype_guard and dtype != torch.float32 and not converted
    verdict_key = _verdict_key(files, spec, options, device, dtype) if guarded else None
    known = recall(verdict_key) if verdict_key is not None else None
    if known is not None:  # the same weights, machine and software were judged before: no probe
        guarded, dtype = False, known[0]
        logger.info("dtype auto: %s (verdict remembered from an earlier load of %s)", dtype, files.path)
    guarded = guarded and float32_fits(files.path, device)
    family = _load_quietly(spec, files, device, torch.float32 if guarded else dtype, options)
    base = default_budget(device)
    info = ModelInfo(
        name=name,
        path=str(files.path),
        family=spec.name,
        device=str(device),
        dtype=_dtype_name(dtype),
        max_length=family.limits.max_length,
        load_seconds=0.0,
        backend=options.model.backend,
        quantize=options.model.quantize,
        dtype_check=known[1] if known is not None else None,
        deterministic=options.deterministic,
    )
    loaded = LoadedModel(
        spec=spec,
        family=family,
        worker=FamilyWorker(family),
        info=info,
        budget=TokenBudget(
            options.batch_tokens or base.max_tokens,
            1 if options.deterministic else options.max_batch_size or base.max_batch_size,
        ),
        defaults=Defaults(normalize=options.normalize, truncate=options.truncate),
        options=options.model,
    )
    if guarded:
        loaded = _guard(loaded, dtype)
        if verdict_key is not None and loaded.info.dtype_check is not None:
            remember(verdict_key, getattr(torch, loaded.info.dtype), loaded.info.dtype_check)
    loaded = replace(loaded, info=replace(loaded.info, load_seconds=time.perf_counter() - started))
    logger.info("loaded %s as %s on %s (%s)", name, spec.name, loaded.info.device, loaded.info.dtype)
    return loaded


def _requested_device(spec: str | torch.device) -> torch.device | None:
    """The device kind a user asked for (before checking it exists), or None for "auto" or a malformed spec."""
    if isinstance(spec, torch.device):
        return spec
    try:
        return None if spec.strip().lower() == "auto" else torch.device(spec.strip().lower())
    except RuntimeError:
        return None


def _onnx_only_folder(files: ModelFiles, options: LoadOptions) -> LoadOptions:
    """A folder holding an ONNX graph and no torch weights (``rerankd export --onnx``) runs on ONNX Runtime:
    there is nothing for the torch backend to load."""
    if options.model.backend != "torch" or files.has_torch_weights or find_graph(files.path, None) is None:
        return options
    logger.info("%s holds an ONNX graph and no torch weights: backend onnx", files.path)
    return replace(options, model=replace(options.model, backend="onnx"))


def _check_capabilities(spec: FamilySpec, model: ModelOptions) -> None:
    """Options that only some families can honour are refused for the others, before any weights are read."""
    if (model.backend != "torch" or model.quantize) and spec.capabilities.onnx_output is None:
        raise InvalidInput(
            f"backend/quantize apply to families with an ONNX graph (cross-encoder, bi-encoder), not {spec.name}",
            param="backend",
        )
    check_family_choices(spec, model)


def check_family_choices(spec: FamilySpec, options: ModelOptions | ScoreOptions) -> None:
    """Options only some families honour (cutoff layers, token compression, score weights), given as a load option or
    per call, are refused for the others with an :class:`InvalidInput` (HTTP 400) naming the families that take them."""
    for option in FAMILY_CHOICES:
        if getattr(options, option) is not None and not spec.capabilities.accepts(option):
            takers = ", ".join(s.name for s in families() if s.capabilities.accepts(option))
            raise InvalidInput(
                f"{option} is not an option of {spec.name} models (it applies to {takers}): "
                "leave it out for this model",
                param=option,
            )


def _guard(loaded: LoadedModel, dtype: torch.dtype) -> LoadedModel:
    """Keep ``dtype`` only if the probe set's scores agree with float32's (see runtime.dtype_guard)."""

    def probe() -> Sequence[float]:
        job = prepare_pairs(loaded.family, check_pairs(PROBE_PAIRS), ScoreOptions(), loaded.defaults)
        raw = run_planned(loaded.worker, job.items, job.key, loaded.budget)
        return [primary_score(row) for row in job.finish(raw).tolist()]

    module = loaded.family.weights()
    chosen, agreement = check_loaded(module, loaded.spec.capabilities.fp32_heads, probe, dtype)
    if chosen == torch.bfloat16 and loaded.spec.capabilities.onnx_output is not None:  # an encoder_model family
        pack_linears(module)  # as encoder_model packs a bf16 load: the same model whichever way bf16 was chosen
    return replace(loaded, info=replace(loaded.info, dtype=_dtype_name(chosen), dtype_check=agreement))


def _verdict_key(
    files: ModelFiles, spec: FamilySpec, options: LoadOptions, device: torch.device, dtype: torch.dtype
) -> VerdictKey:
    """What the guard's verdict depends on (see runtime.guard_cache): weights, family and the options that change
    the probe's scores, machine, software, probe set and the reduced dtype."""
    context = (
        f"{spec.name}|{options.model!r}|normalize={options.normalize}|truncate={options.truncate}"
        f"|budget={options.batch_tokens},{options.max_batch_size}"
    )
    return VerdictKey.build(files.path, device, dtype, context, PROBE_PAIRS)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
