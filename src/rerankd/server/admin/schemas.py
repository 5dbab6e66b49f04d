"""Bodies of the admin API and of ``POST /v1/feedback``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from rerankd.server.field_types import Count
from rerankd.server.schemas import RequestModel, ResponseModel


class WeightsIn(RequestModel):
    weights: dict[str, float] = Field(description="arm -> weight (>= 0, positive sum), e.g. {'a': 95, 'b': 5}")


class ModelIn(RequestModel):
    name: str = Field(min_length=1)
    path: str = Field(min_length=1, description="folder, hub id, modelscope:<id> or packaged model name")


class ShadowIn(RequestModel):
    candidate: str
    fraction: float = Field(ge=0, le=1)
    log: str | None = Field(None, description="a JSONL file on the server that gets both rankings per request")


class AdminState(ResponseModel):
    routes: dict[str, dict[str, float]]
    shadows: dict[str, dict[str, Any]]
    models: dict[str, str]  # name -> "ready", "loading" or "failed: ..."
    added_models: dict[str, str]
    removed_models: list[str]
    changes: int


MAX_FEEDBACK_ITEMS = 10_000  # clicked indices, graded or timed documents per event


class FeedbackIn(RequestModel):
    """What the user did with a served ranking: the response ``id`` and the document indices (positions in the
    request's ``documents``) they clicked or used; optional graded relevance and, per clicked index, the dwell time:
    a click with a dwell under the server's ``RERANKD_FEEDBACK_MIN_DWELL_MS`` is a short click, counted as no click."""

    id: str = Field(min_length=1, max_length=256)
    clicked: list[Count] = Field(default_factory=list, max_length=MAX_FEEDBACK_ITEMS)
    relevance: dict[str, Count] | None = Field(None, max_length=MAX_FEEDBACK_ITEMS)
    dwell_ms: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, max_length=MAX_FEEDBACK_ITEMS, description="clicked index -> milliseconds the user stayed on the document"
    )


class FeedbackOut(ResponseModel):
    status: Literal["recorded"] = "recorded"
    route: str
    model: str
    short_clicks: list[int] = Field(default_factory=list, description="clicks under the dwell threshold (not counted)")


class ArmOut(ResponseModel):
    arm: str
    events: int
    means: dict[str, float]


class ReportOut(ResponseModel):
    route: str
    k: int
    arms: list[ArmOut]
    comparisons: list[dict[str, Any]]
