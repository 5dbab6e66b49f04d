"""Which family runs a model: detected from the folder's config.json, or named explicitly.

Adding a family = one file under ``families/`` defining ``SPEC`` (a :class:`FamilySpec`; or ``SPECS``, a tuple of
them, for a module serving several related families) + its module name
in :data:`FAMILY_MODULES`. Specs are tried in that order; the first whose ``detect`` accepts the config
wins, so specific layouts come before generic ones. A plain causal-LM config does not say "reranker": such
families list the published model ids they serve in ``FamilySpec.known_ids`` (matched on the hub id or
the folder's name); anything else needs an explicit ``family=``.
"""

from __future__ import annotations

import importlib
from functools import cache

from rerankd.errors import UnsupportedModel
from rerankd.families.base import FamilySpec
from rerankd.loading import ModelFiles

# Order matters: specific layouts first, generic ones last.
FAMILY_MODULES: tuple[str, ...] = (
    "rerankd.families.layerwise",
    "rerankd.families.gemma2_lightweight",
    "rerankd.families.bge_m3",
    "rerankd.families.colbert",
    "rerankd.families.minicpm",
    "rerankd.families.cross_encoder",
    "rerankd.families.bi_encoder",
    "rerankd.families.mxbai",
    "rerankd.families.yes_no",
)


@cache
def families() -> tuple[FamilySpec, ...]:
    modules = [importlib.import_module(name) for name in FAMILY_MODULES]
    return tuple(spec for module in modules for spec in getattr(module, "SPECS", None) or (module.SPEC,))


def family_names() -> list[str]:
    return [spec.name for spec in families()]


def get_spec(name: str) -> FamilySpec:
    for spec in families():
        if spec.name == name:
            return spec
    raise UnsupportedModel(f"unknown family {name!r}; supported families: {', '.join(family_names())}")


def _names_of(files: ModelFiles) -> set[str]:
    requested = files.requested.lower().rstrip("/")
    return {requested, requested.rsplit("/", 1)[-1], files.path.name.lower()}


def known_family(files: ModelFiles) -> FamilySpec | None:
    """The family serving a published model id, matched on the requested id or the folder's name."""
    names = _names_of(files)
    for spec in families():
        for model_id in spec.known_ids:
            if model_id.lower() in names or model_id.lower().rsplit("/", 1)[-1] in names:
                return spec
    return None


def detect_family(files: ModelFiles, override: str | None = None) -> FamilySpec:
    """The family for a model folder: the override, a known published id, or the first spec that matches."""
    if override:
        return get_spec(override)
    known = known_family(files)
    if known is not None:
        return known
    for spec in families():
        if spec.detect(files):
            return spec
    archs = ", ".join(files.config.get("architectures") or []) or files.config.get("model_type", "unknown")
    lines = "; ".join(f"{s.name} ({s.detection})" for s in families())
    likely = [s.name for s in families() if s.could_run is not None and s.could_run(files)]
    hint = "".join(
        f' If it is {name} (or a fine-tune of it), pass family="{name}" (CLI: --family {name}).' for name in likely
    )
    raise UnsupportedModel(
        f"cannot tell which reranker family {files.requested} ({archs}) belongs to: nothing in its folder names a "
        f"reranker.{hint} Supported families: {lines}. If the model is one of them, pass family=... (CLI: --family)."
    )
