"""rerankd: load any text reranker, score query-document pairs correctly and fast, serve them."""

from __future__ import annotations

from rerankd.errors import (
    DeviceUnavailable,
    InputTooLong,
    InvalidInput,
    MissingDependency,
    ModelNotFound,
    NotReady,
    Overloaded,
    RerankdError,
    UnsupportedModel,
)
from rerankd.reranker import ModelInfo, RankedDocument, Reranker

__version__ = "0.1.0"
DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"

__all__ = [
    "DEFAULT_MODEL",
    "DeviceUnavailable",
    "InputTooLong",
    "InvalidInput",
    "MissingDependency",
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
