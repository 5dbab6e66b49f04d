"""Constrained field types and the JSON Schema fragments the request bodies of :mod:`rerankd.server.schemas` share:
whole numbers that accept 1.0, non-blank texts, non-empty lists, and the schemas of queries, texts, pairs,
documents and embedding inputs that the runtime also checks itself (with a 400 naming the field)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from rerankd.families.gemma2_lightweight import COMPRESS_RATIOS


def _whole(value: Any) -> Any:
    """JSON Schema's integers include 1.0: accept a float with no fractional part as that integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# (constraints before the validator, so that the schema states them as JSON Schema's minimum)
WholeNumber = Annotated[int, BeforeValidator(_whole)]
Count = Annotated[int, Field(ge=0), BeforeValidator(_whole)]
Positive = Annotated[int, Field(ge=1), BeforeValidator(_whole)]
PromptCap = Annotated[int, Field(ge=-1), BeforeValidator(_whole)]
DocumentIn = str | dict[str, Any]
TextOrTexts = str | list[str]
Direction = Literal["right", "left", "Right", "Left"]
# Constraints the runtime checks itself (with a 400 and a message naming the field), declared in the schema too so
# that clients and schema-driven tools know them: a query needs a non-space character, a list at least one item.
NON_BLANK: dict[str, Any] = {"minLength": 1, "pattern": r"\S"}
NON_EMPTY: dict[str, Any] = {"minItems": 1}


def text_field(**schema: Any) -> Any:
    return Field(json_schema_extra={**NON_BLANK, **schema})


def items_field(**schema: Any) -> Any:
    return Field(json_schema_extra={**NON_EMPTY, **schema})


QUERY_SCHEMA: dict[str, Any] = {"type": "string", **NON_BLANK}
QUERIES_SCHEMA: dict[str, Any] = {"anyOf": [QUERY_SCHEMA, {"type": "array", "items": QUERY_SCHEMA, **NON_EMPTY}]}
TEXTS_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, **NON_EMPTY}]
}
PAIR_SCHEMA: dict[str, Any] = {
    "type": "array",
    "prefixItems": [QUERY_SCHEMA, {"type": "string"}],
    "minItems": 2,
    "maxItems": 2,
}
# An object document is ranked by its ``text`` field unless rank_fields names others.
DOCUMENT_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "object", "required": ["text"], "properties": {"text": {}}}]
}
Queries = Annotated[TextOrTexts | None, WithJsonSchema(QUERIES_SCHEMA)]
Texts = Annotated[TextOrTexts | None, WithJsonSchema(TEXTS_SCHEMA)]
_TOKEN_IDS: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}, **NON_EMPTY}
EMBEDDING_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2048},
        _TOKEN_IDS,
        {"type": "array", "items": _TOKEN_IDS, "minItems": 1, "maxItems": 2048},
    ]
}


# rerankd's own family options, per request, on the rerank and score dialects (peers' bodies stay valid: absent means
# the served model's default). A model whose family does not take one answers 400 naming the families that do; a
# value the model cannot use (a layer it does not have) is a 400 naming the valid ones.
def _ratio(value: int) -> int:
    if value not in COMPRESS_RATIOS:
        raise ValueError(f"compress_ratio must be one of {', '.join(map(str, COMPRESS_RATIOS))} (1: no compression)")
    return value


_NOT_TAKEN = "; a model of another family answers 400"
CutoffLayers = Annotated[
    list[Count],
    Field(
        min_length=1,
        description="rerankd: exit layers of a layerwise model (bge-reranker-v2-minicpm-layerwise, "
        "bge-gemma2-lightweight); the deepest one's score is returned. Absent: the served model's default" + _NOT_TAKEN,
    ),
]
CompressRatio = Annotated[
    int,
    BeforeValidator(_whole),
    AfterValidator(_ratio),
    WithJsonSchema(
        {
            "type": "integer",
            "enum": list(COMPRESS_RATIOS),
            "description": "rerankd: bge-gemma2-lightweight token compression, passage tokens averaged in windows of "
            "this size (1: off). Absent: the served model's default" + _NOT_TAKEN,
        }
    ),
]
CompressLayers = Annotated[
    list[Positive],
    Field(
        min_length=1,
        description="rerankd: bge-gemma2-lightweight, the layers compression runs before (default [8]); each must be "
        "a layer of the model (1 to its last but one)" + _NOT_TAKEN,
    ),
]
ScoreWeights = Annotated[
    list[Annotated[float, Field(ge=0)]],
    Field(
        min_length=3,
        max_length=3,
        description="rerankd: bge-m3, the weights of its dense, sparse and multi-vector scores (positive sum); the "
        "score is their weighted mean. Absent: the served model's default (1, 1, 1)" + _NOT_TAKEN,
    ),
]
