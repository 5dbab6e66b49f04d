"""Which family runs a model: detected from the folder's config.json, or named explicitly.

Adding a family = one file under ``families/`` + one :class:`FamilySpec` in :data:`FAMILIES`. Specs are
tried in order; the first whose ``detect`` accepts the config wins. A plain causal-LM config does not say
"reranker": such families match only published model ids listed in :data:`KNOWN_MODEL_IDS` (on the hub id
or the folder's name) or an explicit ``family=``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import torch

from rerankd.errors import UnsupportedModel
from rerankd.families.base import Embedder, ModelOptions, PairScorer
from rerankd.loading import ModelFiles

Family = Union[PairScorer, Embedder]  # noqa: UP007 - runtime alias used in isinstance-free annotations
Loader = Callable[[ModelFiles, torch.device, torch.dtype, ModelOptions, bool], Any]

# Published model ids whose config alone does not identify the recipe -> family name. Matched
# case-insensitively on the full hub id or on the last path component (the folder's name).
KNOWN_MODEL_IDS: dict[str, str] = {}


@dataclass(frozen=True)
class FamilySpec:
    name: str
    summary: str
    detection: str
    detect: Callable[[ModelFiles], bool]
    load: Loader


def architectures(files: ModelFiles) -> list[str]:
    return [str(a) for a in files.config.get("architectures") or []]


def known_family(files: ModelFiles) -> str | None:
    """The family of a published model id, matched on the requested id or the folder name."""
    candidates = {files.requested.lower().rstrip("/"), files.path.name.lower()}
    candidates |= {c.rsplit("/", 1)[-1] for c in list(candidates)}
    for model_id, family in KNOWN_MODEL_IDS.items():
        if model_id.lower() in candidates or model_id.lower().rsplit("/", 1)[-1] in candidates:
            return family
    return None


def _is_cross_encoder(files: ModelFiles) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in architectures(files))


def _is_bi_encoder(files: ModelFiles) -> bool:
    if (files.path / "modules.json").is_file():
        return True
    archs = architectures(files)
    return bool(archs) and all(a.endswith("Model") for a in archs)


def _load_cross_encoder(*args: Any) -> Any:
    from rerankd.families.cross_encoder import load_cross_encoder

    return load_cross_encoder(*args)


def _load_bi_encoder(*args: Any) -> Any:
    from rerankd.families.bi_encoder import load_bi_encoder

    return load_bi_encoder(*args)


FAMILIES: list[FamilySpec] = [
    FamilySpec(
        name="cross-encoder",
        summary="BERT/XLM-R/... sequence classifiers with one logit (bge-reranker-base/large/v2-m3, ms-marco)",
        detection="architectures: *ForSequenceClassification, num_labels 1",
        detect=_is_cross_encoder,
        load=_load_cross_encoder,
    ),
    FamilySpec(
        name="bi-encoder",
        summary="embedding models; score = cosine of L2-normalised query and document vectors",
        detection="a sentence-transformers folder (modules.json) or a bare *Model architecture",
        detect=_is_bi_encoder,
        load=_load_bi_encoder,
    ),
]


def family_names() -> list[str]:
    return [spec.name for spec in FAMILIES]


def get_spec(name: str) -> FamilySpec:
    for spec in FAMILIES:
        if spec.name == name:
            return spec
    raise UnsupportedModel(f"unknown family {name!r}; supported families: {', '.join(family_names())}")


def detect_family(files: ModelFiles, override: str | None = None) -> FamilySpec:
    """The family for a model folder: the override, a known published id, or the first spec that matches."""
    if override:
        return get_spec(override)
    known = known_family(files)
    if known is not None:
        return get_spec(known)
    for spec in FAMILIES:
        if spec.detect(files):
            return spec
    archs = ", ".join(architectures(files)) or files.config.get("model_type", "unknown")
    lines = "; ".join(f"{s.name} ({s.detection})" for s in FAMILIES)
    raise UnsupportedModel(
        f"cannot tell which reranker family {files.requested} ({archs}) belongs to. Supported families: "
        f"{lines}. If the model is one of them, pass family=... (CLI: --family)."
    )
