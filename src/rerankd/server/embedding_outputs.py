"""``/v1/embeddings`` beyond one dense vector: the ``outputs`` field (rerankd's extension of OpenAI's request).

Which outputs a served model gives: a bi-encoder ``dense``; a family with several outputs
(:class:`~rerankd.families.late_interaction.MultiOutputEncoder`: bge-m3 ``dense``/``sparse``/``multi_vector``,
ColBERT ``multi_vector``) those it declares; any other model none. A request without ``outputs`` asks for
``["dense"]`` and gets OpenAI's response unchanged. Values are those of :func:`rerankd.multi_output.embed_outputs`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import torch

from rerankd.errors import InvalidInput, PayloadTooLarge
from rerankd.families.late_interaction import MultiOutputEncoder
from rerankd.jobs import Budget
from rerankd.multi_output import EmbeddingOutputs, embed_outputs
from rerankd.reranker import Reranker
from rerankd.server import dialects as d
from rerankd.server import schemas as s
from rerankd.server.deadlines import Deadline, in_thread
from rerankd.server.engine import Engine, ServedModel
from rerankd.validation import CheckedTexts

DENSE: tuple[str, ...] = ("dense",)


def embedding_outputs(reranker: Reranker) -> tuple[str, ...]:
    """The outputs ``/v1/embeddings`` can return for this model (empty: it cannot answer the route)."""
    if reranker.is_embedder:
        return DENSE
    family = reranker.family
    return tuple(family.outputs) if isinstance(family, MultiOutputEncoder) else ()


def asked_outputs(body: s.EmbeddingRequest) -> tuple[str, ...]:
    return tuple(dict.fromkeys(body.outputs)) if body.outputs else DENSE


def resolve_for_outputs(engine: Engine, body: s.EmbeddingRequest, sticky: str | None) -> ServedModel:
    """The model that answers: the one named, or (no ``model``) the first that gives every asked output. A model
    that cannot give them is an :class:`InvalidInput` (400) naming what it gives."""
    asked = asked_outputs(body)
    served = engine.resolve(body.model, embedder=True, sticky=sticky)
    if body.model is None and not set(asked) <= set(embedding_outputs(served.reranker)):
        fitting = [m for m in engine.models.values() if set(asked) <= set(embedding_outputs(m.reranker))]
        served = fitting[0] if fitting else served
    offered = embedding_outputs(served.reranker)
    if not offered:
        raise InvalidInput(
            f"{served.name} is a {served.reranker.info.family}; /v1/embeddings needs an embedding model (a "
            "bi-encoder, or a model with sparse or multi-vector outputs such as bge-m3 or ColBERT)",
            param="model",
        )
    missing = [name for name in asked if name not in offered]
    if missing:
        hint = "" if body.outputs else ' (ask "outputs" among those)'
        raise InvalidInput(
            f"{served.name} ({served.reranker.info.family}) gives outputs {list(offered)}, not {missing}{hint}",
            param="outputs" if body.outputs else "model",
        )
    return served


def dense_width(reranker: Reranker) -> int:
    """The width of the model's dense vectors (a one-text probe)."""
    if reranker.is_embedder:
        return int(reranker.embed(["width probe"]).shape[1])
    dense = embed_outputs(reranker, ["width probe"], output=DENSE).dense
    assert dense is not None
    return int(dense.shape[1])


async def embed_text_outputs(
    engine: Engine, served: ServedModel, texts: CheckedTexts, asked: Sequence[str], deadline: Deadline
) -> EmbeddingOutputs:
    """The asked outputs of ``texts``, computed in a worker thread within ``deadline`` (these requests run beside
    the model's scheduler, not batched with other requests)."""
    limit = engine.settings.max_embedding_inputs
    if len(texts) > limit:
        raise PayloadTooLarge(f"too many inputs: {len(texts)}, the limit is {limit} per request", param="input")

    def work(_budget: Budget) -> EmbeddingOutputs:
        return embed_outputs(served.reranker, texts, role="document", output=asked)

    return await in_thread(work, deadline, engine.settings.max_queue)


def outputs_response(model: str, result: EmbeddingOutputs, body: s.EmbeddingRequest) -> s.EmbeddingResponse:
    """OpenAI's response shape with ``embedding`` (dense, when asked), ``sparse`` and ``multi_vector`` per text."""
    if result.dense is not None:
        response = d.embedding_response(model, torch.from_numpy(result.dense), result.tokens, body)
    else:
        total = sum(result.tokens)
        data = [s.Embedding(index=i) for i in range(len(result.tokens))]
        response = s.EmbeddingResponse(data=data, model=model, usage=s.Usage(prompt_tokens=total, total_tokens=total))
    for i, item in enumerate(response.data):
        if result.sparse is not None:
            ordered = sorted(result.sparse[i].items())
            item.sparse = s.SparseEmbedding(indices=[k for k, _ in ordered], values=[float(v) for _, v in ordered])
        if result.multi_vector is not None:
            item.multi_vector = _vectors(result.multi_vector[i], body.encoding_format == "base64")
    return response


def _vectors(matrix: np.ndarray, packed: bool) -> list[list[float]] | list[str]:
    if packed:
        return [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in matrix]
    rows: list[list[float]] = matrix.tolist()
    return rows
