"""rerankd: load any text reranker, score query-document pairs correctly and fast, serve them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rerankd.errors import (
    DeviceUnavailable,
    InputTooLong,
    InvalidInput,
    MissingDependency,
    ModelFetchFailed,
    ModelNotFound,
    NotReady,
    Overloaded,
    RerankdError,
    UnsupportedModel,
)

if TYPE_CHECKING:
    from rerankd.reranker import ModelInfo, RankedDocument, Reranker

# The facade imports torch (~1.5 s): loaded on first use, so `rerankd --help` and `import rerankd.settings` stay fast.
_LAZY = {"ModelInfo", "RankedDocument", "Reranker"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from rerankd import reranker

        return getattr(reranker, name)
    raise AttributeError(f"module 'rerankd' has no attribute {name!r}")


__version__ = "0.1.0"
DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"

__all__ = [
    "DEFAULT_MODEL",
    "DeviceUnavailable",
    "InputTooLong",
    "InvalidInput",
    "MissingDependency",
    "ModelFetchFailed",
    "ModelInfo",
    "ModelNotFound",
    "NotReady",
    "Overloaded",
    "RankedDocument",
    "RerankdError",
    "Reranker",
    "UnsupportedModel",
    "__version__",
]
