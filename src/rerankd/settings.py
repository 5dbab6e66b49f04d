"""One frozen settings object shared by the CLI and the server: flags override ``RERANKD_*`` env vars,
which override the defaults. Read at start-up (``Settings()``), never at import."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANKD_", frozen=True, extra="forbid")

    # --- model loading (every command)
    model: str = Field("all-MiniLM-L6-v2", description="folder, hub id, modelscope:<id> or packaged model")
    family: str | None = Field(None, description="override family detection")
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = Field(None, ge=8)
    normalize: bool = True
    trust_remote_code: bool = False
    batch_tokens: int | None = Field(None, ge=16, description="padded tokens per forward pass")
    max_batch_size: int | None = Field(None, ge=1)
    truncation: Literal["flag", "longest_first"] = "flag"

    def with_overrides(self, **flags: Any) -> Settings:
        """A copy with every flag that was given (not None) applied."""
        given = {key: value for key, value in flags.items() if value is not None}
        return self.model_copy(update=given) if given else self

    def reranker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`rerankd.Reranker.from_pretrained`."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "family": self.family,
            "max_length": self.max_length,
            "normalize": self.normalize,
            "trust_remote_code": self.trust_remote_code,
            "batch_tokens": self.batch_tokens,
            "max_batch_size": self.max_batch_size,
            "truncation": self.truncation,
        }
