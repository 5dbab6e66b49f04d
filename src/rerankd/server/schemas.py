"""Every HTTP body of every dialect, in one module (requests, responses, errors).

Requests ignore fields they do not know (clients send extras such as vLLM's ``mm_processor_kwargs``), except
Cohere v2 rerank, which rejects them with 422 as Cohere does. Responses forbid extras, so the tests that
validate bodies with these models catch any drift. Field names follow each client SDK exactly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    WithJsonSchema,
)

from rerankd.server.field_types import (
    DOCUMENT_SCHEMA,
    EMBEDDING_INPUT_SCHEMA,
    NON_EMPTY,
    PAIR_SCHEMA,
    CompressLayers,
    CompressRatio,
    Count,
    CutoffLayers,
    Direction,
    DocumentIn,
    Positive,
    PromptCap,
    Queries,
    ScoreWeights,
    Texts,
    WholeNumber,
    items_field,
    text_field,
)


def _never_true(value: bool) -> bool:
    if value:
        raise ValueError("Cohere v2 never returns documents: omit return_documents or send false")
    return value


# vLLM's field pairs: a request names one of them, both sides.
SCORE_FIELD_PAIRS = (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2"))
SCORE_QUERY_FIELDS = ("text_1", "queries", "data_1")


# Strict types: a number is not a boolean, a boolean is not a number, a string is not a number (each a 422).
class RequestModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- rerank
class RerankRequest(RequestModel):
    """Cohere v1, Jina, vLLM and Infinity rerank requests (one union of their fields)."""

    model: str | None = None
    query: str = text_field()
    documents: Annotated[list[DocumentIn], WithJsonSchema({"type": "array", "items": DOCUMENT_SCHEMA, **NON_EMPTY})]
    top_n: Count | None = Field(None, validation_alias=AliasChoices("top_n", "top_k"))
    return_documents: bool | None = None
    rank_fields: list[str] | None = None
    max_tokens_per_doc: Positive | None = None
    max_chunks_per_doc: Positive | None = None
    truncate: bool | None = None
    truncation_direction: Direction | None = Field(
        None, validation_alias=AliasChoices("truncation_direction", "truncation_side")
    )
    truncate_prompt_tokens: PromptCap | None = None
    raw_scores: bool = False
    use_activation: bool | None = None
    instruction: str | None = None
    cutoff_layers: CutoffLayers | None = None
    compress_ratio: CompressRatio | None = None
    compress_layers: CompressLayers | None = None
    score_weights: ScoreWeights | None = None
    priority: WholeNumber = 0


class TEIRerankRequest(RequestModel):
    """text-embeddings-inference's rerank request (``texts`` instead of ``documents``)."""

    model: str | None = None
    query: str = text_field()
    texts: list[str] = items_field()
    truncate: bool | None = None
    truncation_direction: Direction | None = None
    raw_scores: bool = False
    return_text: bool = False


def rerank_dialect(value: Any) -> str:
    """TEI bodies have ``texts`` where every other dialect has ``documents``."""
    if isinstance(value, dict):
        return "tei" if "texts" in value and "documents" not in value else "cohere"
    return "tei" if isinstance(value, TEIRerankRequest) else "cohere"


# /rerank's body: validated as one dialect only, so a schema error names that dialect's fields.
AnyRerankRequest = Annotated[
    Annotated[RerankRequest, Tag("cohere")] | Annotated[TEIRerankRequest, Tag("tei")],
    Discriminator(rerank_dialect),
]
DIALECT_TAGS = ("cohere", "tei")


class RelevantSpans(StrictRequest):
    mode: Literal["enabled", "disabled"]
    threshold: float | None = None
    max_spans: WholeNumber | None = None


class V2RerankRequest(StrictRequest):
    """Cohere v2 rerank: the fields of the Cohere SDK, plus the two Elasticsearch's `cohere` inference service sends
    from its task settings (``return_documents: false``, which v2 does anyway — ``true`` is a 422, v2 never returns
    documents — and ``max_chunks_per_doc``); anything else is a 422."""

    model: str | None = None
    query: str = text_field()
    documents: list[str] = items_field()
    top_n: Count | None = None
    max_tokens_per_doc: Positive | None = None
    max_chunks_per_doc: Positive | None = None
    return_documents: Annotated[bool, AfterValidator(_never_true), Field(json_schema_extra={"const": False})] | None = (
        None
    )
    relevant_spans: RelevantSpans | None = None
    priority: WholeNumber | None = None


class RerankResult(ResponseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class V2RerankResult(ResponseModel):
    index: int
    relevance_score: float


class Usage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class ApiVersion(ResponseModel):
    version: str


class BilledUnits(ResponseModel):
    search_units: int


class MetaTokens(ResponseModel):
    input_tokens: int
    output_tokens: int = 0


class Meta(ResponseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens
    warnings: list[str] = Field(default_factory=list)


class RerankResponse(ResponseModel):
    id: str
    object: Literal["rerank"] = "rerank"
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: Meta


class V2RerankResponse(ResponseModel):
    id: str
    model: str
    results: list[V2RerankResult]
    meta: Meta


class TEIRank(ResponseModel):
    index: int
    score: float
    text: str | None = None


class TEIRerankResponse(RootModel[list[TEIRank]]):
    pass


# ---------------------------------------------------------------------------------------------- score / predict
class ScoreRequest(RequestModel):
    """vLLM's score request: one of the field pairs text_1/text_2, queries/documents, queries/items,
    data_1/data_2; each side a string or a list (1:1, 1:N, or N:N with lists of equal length)."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        strict=True,
        json_schema_extra={"anyOf": [{"required": list(pair)} for pair in SCORE_FIELD_PAIRS]},
    )

    model: str | None = None
    text_1: Queries = None
    text_2: Texts = None
    queries: Queries = None
    documents: Texts = None
    items: Texts = None
    data_1: Queries = None
    data_2: Texts = None
    truncate_prompt_tokens: PromptCap | None = None
    truncation_side: Direction | None = None
    use_activation: bool | None = None
    activation: bool | None = None
    raw_scores: bool = False
    instruction: str | None = None
    cutoff_layers: CutoffLayers | None = None
    compress_ratio: CompressRatio | None = None
    compress_layers: CompressLayers | None = None
    score_weights: ScoreWeights | None = None
    priority: WholeNumber = 0


class ScoreData(ResponseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ScoreResponse(ResponseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: ScoreUsage


class PredictRequest(RequestModel):
    """TEI's predict request: a [query, document] pair or a batch of pairs."""

    model: str | None = None
    inputs: Annotated[
        list[str] | list[list[str]] | str,
        WithJsonSchema({"anyOf": [PAIR_SCHEMA, {"type": "array", "items": PAIR_SCHEMA, **NON_EMPTY}]}),
    ]
    truncate: bool | None = None
    truncation_direction: Direction | None = None
    raw_scores: bool = False


class Prediction(ResponseModel):
    score: float
    label: str


class PredictResponse(RootModel[list[Prediction] | list[list[Prediction]]]):
    pass


# ---------------------------------------------------------------------------------------------- embeddings
EmbeddingOutput = Literal["dense", "sparse", "multi_vector"]


class EmbeddingRequest(RequestModel):
    """OpenAI's embeddings request: one text, a list of texts (none empty, at most 2,048), or token ids of the
    model's own tokenizer (one list, or a list of lists)."""

    model: str | None = None
    input: Annotated[
        str | list[str] | list[WholeNumber] | list[list[WholeNumber]], WithJsonSchema(EMBEDDING_INPUT_SCHEMA)
    ]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Positive | None = None
    user: str | None = None
    outputs: list[EmbeddingOutput] | None = Field(
        default=None,
        min_length=1,
        description="rerankd: which outputs to return (models with several, e.g. bge-m3, ColBERT); absent: "
        '["dense"], the OpenAI response. "dense" fills `embedding`, "sparse" `sparse`, "multi_vector" '
        "`multi_vector`; a model without an asked output answers 400",
    )


class SparseEmbedding(ResponseModel):
    """Lexical weights: vocabulary ids of the model's tokenizer (ascending) and their weights."""

    indices: list[int]
    values: list[float]


class Embedding(ResponseModel):
    """``embedding`` is the dense vector (absent when ``outputs`` leaves out "dense"); ``sparse`` and
    ``multi_vector`` (one vector per token; with base64, one string per token) only when asked."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str | None = None
    sparse: SparseEmbedding | None = None
    multi_vector: list[list[float]] | list[str] | None = None


class EmbeddingResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# ---------------------------------------------------------------------------------------------- models / health
class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rerankd"
    kind: Literal["reranker", "embedder", "route"]
    family: str | None = None
    max_length: int | None = None
    device: str | None = None
    dtype: str | None = None
    backend: str | None = None
    quantize: str | None = None
    routes_to: dict[str, float] | None = None


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(ResponseModel):
    status: Literal["ok", "ready"]


# ---------------------------------------------------------------------------------------------- errors
class ErrorDetail(ResponseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(ResponseModel):
    """OpenAI/vLLM/Infinity clients read ``error``; Cohere clients read the top-level ``message``."""

    error: ErrorDetail
    message: str
    request_id: str | None = None


class TEIErrorResponse(ResponseModel):
    error: str
    error_type: str
