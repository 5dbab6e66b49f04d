"""Translations between each client dialect and the engine: request bodies -> (pairs, ScoreOptions),
engine results -> response bodies. Pure functions; the routes glue them to the engine."""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from rerankd.errors import EmptyInput, InvalidInput
from rerankd.jobs import ScoreOptions, ranking
from rerankd.server import schemas as s
from rerankd.server.engine import PairScores
from rerankd.validation import CheckedPairs, CheckedTexts, check_pairs, check_query, check_texts, ranking_pairs

PREDICT_LABEL = "LABEL_0"  # a reranker's one output, as TEI names a single-label classifier's output


def _normalize_flag(raw_scores: bool, use_activation: bool | None) -> bool | None:
    """``None`` keeps the server's setting; raw_scores / use_activation=false ask for logits."""
    if raw_scores:
        return False
    return use_activation


def _side(direction: str | None) -> str:
    return (direction or "right").lower()


def family_choices(body: s.RerankRequest | s.ScoreRequest) -> dict[str, Any]:
    """rerankd's per-request family options (cutoff layers, token compression, score weights), in one canonical
    form (layers sorted, repeats dropped) so that requests meaning the same share score-cache entries."""
    return {
        "cutoff_layers": None if body.cutoff_layers is None else tuple(sorted(set(body.cutoff_layers))),
        "compress_ratio": body.compress_ratio,
        "compress_layers": None if body.compress_layers is None else tuple(sorted(set(body.compress_layers))),
        "score_weights": None if body.score_weights is None else tuple(float(w) for w in body.score_weights),
    }


def rerank_options(body: s.RerankRequest) -> ScoreOptions:
    cap = body.truncate_prompt_tokens
    return ScoreOptions(
        **family_choices(body),
        instruction=body.instruction,
        normalize=_normalize_flag(body.raw_scores, body.use_activation),
        truncate=True if cap is not None else body.truncate,
        truncation_side=_side(body.truncation_direction),  # type: ignore[arg-type]
        max_tokens_per_doc=body.max_tokens_per_doc,
        max_chunks_per_doc=body.max_chunks_per_doc,
        max_input_tokens=cap if cap is not None and cap > 0 else None,
    )


def tei_options(body: s.TEIRerankRequest | s.PredictRequest) -> ScoreOptions:
    return ScoreOptions(
        normalize=False if body.raw_scores else None,
        truncate=body.truncate,
        truncation_side=_side(body.truncation_direction),  # type: ignore[arg-type]
    )


def v2_options(body: s.V2RerankRequest) -> ScoreOptions:
    return ScoreOptions(max_tokens_per_doc=body.max_tokens_per_doc, max_chunks_per_doc=body.max_chunks_per_doc)


def score_options(body: s.ScoreRequest) -> ScoreOptions:
    cap = body.truncate_prompt_tokens
    activation = body.use_activation if body.use_activation is not None else body.activation
    return ScoreOptions(
        **family_choices(body),
        instruction=body.instruction,
        normalize=_normalize_flag(body.raw_scores, activation),
        truncate=True if cap is not None else None,
        truncation_side=_side(body.truncation_side),  # type: ignore[arg-type]
        max_input_tokens=cap if cap is not None and cap > 0 else None,
    )


def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def document_texts(documents: list[s.DocumentIn], rank_fields: list[str] | None, param: str = "documents") -> list[str]:
    """The text each document is ranked by: a string itself, or an object's ``rank_fields`` (default
    ``text``); several fields are joined as ``field: value`` lines."""
    fields = rank_fields or ["text"]
    texts = []
    for index, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        missing = [field for field in fields if field not in document]
        if missing:
            raise InvalidInput(f"{param}[{index}] has no field {missing[0]!r}; set rank_fields", param=param)
        if len(fields) == 1:
            texts.append(_field_text(document[fields[0]]))
        else:
            texts.append("\n".join(f"{field}: {_field_text(document[field])}" for field in fields))
    return texts


def rank_pairs(query: str, documents: list[str], param: str = "documents") -> CheckedPairs:
    return ranking_pairs(query, documents, param=param)


def ranked_order(scores: PairScores, top_n: int | None) -> list[int]:
    """Document indices best first (ties keep input order), cut to ``top_n`` (None or 0: all)."""
    return ranking(scores.scores, top_n)


def _meta(scores: PairScores, version: str, n_documents: int) -> s.Meta:
    tokens = sum(scores.tokens)
    return s.Meta(
        api_version=s.ApiVersion(version=version),
        billed_units=s.BilledUnits(search_units=max(1, math.ceil(n_documents / 100))),
        tokens=s.MetaTokens(input_tokens=tokens, output_tokens=0),
        warnings=scores.warnings(),
    )


def rerank_response(
    scores: PairScores, order: list[int], documents: list[s.DocumentIn], return_documents: bool, version: str
) -> s.RerankResponse:
    results = []
    primary = scores.scores
    for index in order:
        document = documents[index] if return_documents else None
        shown = {"text": document} if isinstance(document, str) else document
        results.append(s.RerankResult(index=index, relevance_score=primary[index], document=shown))
    tokens = sum(scores.tokens)
    return s.RerankResponse(
        id=f"rerank-{uuid.uuid4()}",
        model=scores.model,
        results=results,
        usage=s.Usage(prompt_tokens=tokens, total_tokens=tokens),
        meta=_meta(scores, version, len(documents)),
    )


def v2_response(scores: PairScores, order: list[int], n_documents: int) -> s.V2RerankResponse:
    primary = scores.scores
    results = [s.V2RerankResult(index=i, relevance_score=primary[i]) for i in order]
    return s.V2RerankResponse(
        id=str(uuid.uuid4()), model=scores.model, results=results, meta=_meta(scores, "2", n_documents)
    )


def tei_response(scores: PairScores, order: list[int], texts: list[str], return_text: bool) -> s.TEIRerankResponse:
    primary = scores.scores
    ranks = [s.TEIRank(index=i, score=primary[i], text=texts[i] if return_text else None) for i in order]
    return s.TEIRerankResponse(ranks)


def score_request_pairs(body: s.ScoreRequest) -> CheckedPairs:
    """vLLM's field pairs; one query against N documents (1:1, 1:N) or N queries against N (pairwise). Every field
    given is checked, used or not: an empty list is a 400 wherever it is."""
    for name in sorted({field for pair in s.SCORE_FIELD_PAIRS for field in pair}):
        if getattr(body, name) == []:
            raise EmptyInput(f"{name} must not be empty", param=name)
        if getattr(body, name) is None and name in body.model_fields_set:
            raise InvalidInput(f"{name} must be a string or a list of strings, not null", param=name)
    for name in s.SCORE_QUERY_FIELDS:
        value = getattr(body, name)
        for text in [value] if isinstance(value, str) else value or []:
            check_query(text, param=name)
    for first, second in s.SCORE_FIELD_PAIRS:
        left, right = getattr(body, first), getattr(body, second)
        if left is not None and right is not None:
            break
    else:
        raise InvalidInput(
            "give text_1 and text_2 (or queries/documents, queries/items, data_1/data_2)", param="text_1"
        )
    lefts = [left] if isinstance(left, str) else list(left)
    rights = [right] if isinstance(right, str) else list(right)
    if not lefts or not rights:
        raise EmptyInput(f"{first if not lefts else second} must not be empty", param=first if not lefts else second)
    if len(lefts) == 1:
        return check_pairs([(lefts[0], r) for r in rights])
    if len(lefts) != len(rights):
        raise InvalidInput(
            f"{first} has {len(lefts)} texts and {second} has {len(rights)}: give one {first} text, or as many as "
            f"{second}",
            param=first,
        )
    return check_pairs(list(zip(lefts, rights, strict=True)))


def score_response(scores: PairScores) -> s.ScoreResponse:
    tokens = sum(scores.tokens)
    data = [s.ScoreData(index=i, score=score) for i, score in enumerate(scores.scores)]
    usage = s.ScoreUsage(prompt_tokens=tokens, total_tokens=tokens)
    return s.ScoreResponse(
        id=f"score-{uuid.uuid4().hex}", created=int(time.time()), model=scores.model, data=data, usage=usage
    )


def predict_pairs(inputs: list[str] | list[list[str]] | str) -> tuple[CheckedPairs, bool]:
    """(pairs, single) from TEI's ``inputs``: one [query, document] pair or a batch of them."""
    if isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs):
        return check_pairs([(str(inputs[0]), str(inputs[1]))]), True
    if isinstance(inputs, list) and inputs and all(isinstance(x, list) for x in inputs):
        pairs = []
        for index, item in enumerate(inputs):
            if not isinstance(item, list) or len(item) != 2:
                raise InvalidInput(f"inputs[{index}] must be a [query, document] pair", param="inputs")
            pairs.append((item[0], item[1]))
        return check_pairs(pairs), False
    if isinstance(inputs, list) and not inputs:
        raise EmptyInput("inputs must not be empty", param="inputs")
    raise InvalidInput("/predict scores [query, document] pairs; a single text has nothing to rank", param="inputs")


def predict_response(scores: PairScores, single: bool) -> s.PredictResponse:
    rows = [[s.Prediction(score=score, label=PREDICT_LABEL)] for score in scores.scores]
    return s.PredictResponse(rows[0] if single else rows)


def embedding_texts(body: s.EmbeddingRequest, backend: Tokenizer) -> CheckedTexts:
    """The texts to embed. Token-id inputs are ids of the model's own tokenizer: they are decoded and encoded
    again. Like OpenAI's API, an empty string is refused (400)."""
    raw = body.input
    if raw and all(isinstance(x, int) for x in raw):
        return check_texts([_decoded(raw, backend, "input")], param="input")  # type: ignore[arg-type]
    if raw and all(isinstance(x, list) for x in raw):
        return check_texts([_decoded(ids, backend, f"input[{i}]") for i, ids in enumerate(raw)], param="input")  # type: ignore[arg-type]
    checked = check_texts([raw] if isinstance(raw, str) else list(raw), param="input")
    for index, text in enumerate(checked):
        if not text:
            raise EmptyInput(f"input[{index}] must not be empty (an empty string has nothing to embed)", param="input")
    return checked


def _decoded(ids: list[int], backend: Tokenizer, where: str) -> str:
    if not ids:
        raise EmptyInput(f"{where} must not be empty (no token ids)", param="input")
    size = backend.get_vocab_size(with_added_tokens=True)
    bad = next((i for i in ids if not 0 <= i < size), None)
    if bad is not None:
        raise InvalidInput(f"{where} has token id {bad}, outside the model's vocabulary of {size}", param="input")
    return str(backend.decode(ids, skip_special_tokens=True))


def embedding_response(
    model: str, vectors: torch.Tensor, tokens: list[int], body: s.EmbeddingRequest
) -> s.EmbeddingResponse:
    matrix = vectors.float().numpy()
    if body.dimensions is not None:
        if body.dimensions > matrix.shape[1]:
            raise InvalidInput(
                f"dimensions={body.dimensions} is over the model's {matrix.shape[1]}", param="dimensions"
            )
        matrix = matrix[:, : body.dimensions]
        matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    data = []
    for index, vector in enumerate(matrix):
        encoded: list[float] | str
        if body.encoding_format == "base64":
            encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            encoded = vector.tolist()
        data.append(s.Embedding(index=index, embedding=encoded))
    total = sum(tokens)
    return s.EmbeddingResponse(data=data, model=model, usage=s.Usage(prompt_tokens=total, total_tokens=total))
