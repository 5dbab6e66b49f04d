"""The typed error hierarchy. Front ends map these to user-facing codes in exactly one place."""

from __future__ import annotations


class RerankdError(Exception):
    """Base of every error rerankd raises on purpose. ``code`` is a stable machine-readable name."""

    code = "rerankd_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(RerankdError):
    """The caller's input is malformed: empty query, empty document list, wrong types."""

    code = "invalid_input"


class EmptyInput(InvalidInput):
    """A required text or list is empty (TEI calls this error type "empty"). Same code as InvalidInput."""


class InputTooLong(InvalidInput):
    """An input exceeds the model's length limit and truncation is off."""

    code = "input_too_long"

    def __init__(self, message: str, *, index: int, tokens: int, limit: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.index = index
        self.tokens = tokens
        self.limit = limit


class PayloadTooLarge(RerankdError):
    """A request bigger than this server accepts: too many documents, a body over the byte limit, or more model
    inputs (after chunking) or tokens than the whole queue may hold. Retrying the same request cannot help."""

    code = "payload_too_large"


class ModelNotFound(RerankdError):
    """No model folder, hub repository or served model of that name."""

    code = "model_not_found"


class UnsupportedModel(RerankdError):
    """The model exists but rerankd has no family for its layout, or the family cannot run it."""

    code = "unsupported_model"


class MissingDependency(RerankdError):
    """An optional dependency is not installed; the message names the extra to install."""

    code = "missing_dependency"


class ModelFetchFailed(RerankdError):
    """The model may exist but could not be fetched (network down, hub unreachable, bad credentials)."""

    code = "model_fetch_failed"


class DeviceUnavailable(RerankdError):
    """The requested device cannot be used here (no CUDA, no torch_npu, bad index...)."""

    code = "device_unavailable"


class Overloaded(RerankdError):
    """The request queue is full; retry later."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Overloaded):
    """A request did not finish within its time limit; its remaining work was dropped. The API contract
    serves it like a full queue ("over capacity": 429 with ``Retry-After``), with code ``timeout``."""

    code = "timeout"


class OutOfMemory(RerankdError):
    """The device ran out of memory for a batch, even after splitting it; retry later or with fewer inputs."""

    code = "out_of_memory"


class NotReady(RerankdError):
    """The model is not loaded yet, or the engine is shutting down."""

    code = "not_ready"


class StoreUnavailable(NotReady):
    """A shared store (the Redis that keeps served rankings for feedback) cannot be reached right now: retry later."""

    code = "store_unavailable"
