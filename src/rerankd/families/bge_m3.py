"""BAAI/bge-m3 as a scorer: dense, sparse (lexical weights) and multi-vector (ColBERT) scores and their weighted sum.

Reference: FlagEmbedding 1.4.2 ``BGEM3FlagModel.compute_score`` (``inference/embedder/encoder_only/m3.py``) with its
model (``finetune/embedder/encoder_only/m3/modeling.py``). One XLM-R encoder, three heads on its last hidden state:

- dense: the ``<s>`` (CLS) state, L2-normalised; score ``q . p``;
- sparse: ``relu(sparse_linear(h_t))`` per token, the max per token id, ids of ``<s>``, ``</s>``, ``<pad>``,
  ``<unk>`` dropped; score ``sum_t w_q[t] * w_p[t]`` over shared ids;
- multi-vector: ``colbert_linear(h_t)`` for every token after ``<s>`` (``</s>`` included), L2-normalised; score
  ``sum_i max_j q_i . p_j / n_q``.

Texts are tokenised alone with their specials (``<s> ... </s>``) and cut to ``query_max_length`` (queries, default
512) and ``max_length`` (documents, default 512). The score is ``(w_d * dense + w_s * sparse + w_c * colbert) /
(w_d + w_s + w_c)``: weights per call (``score_weights``, also a load option), default ``(1, 1, 1)`` like the
reference's ``colbert+sparse+dense``; ``(1, 0, 0)`` is the dense score alone, ``(w_d, w_s, 0)`` its
``sparse+dense``. Scores are similarities (activation identity).

Padding note: ``compute_score`` pads a batch of documents and lets padded (zero) multi-vectors take part in the
max, so its ``colbert`` score depends on the batch when every similarity of a query token is negative. rerankd uses
each text's own vectors only (``BGEM3FlagModel.colbert_score`` on ``encode`` outputs); the two agree whenever
nothing is padded (parity tests use batches of one pair).

Document vectors are cached per model (:class:`~rerankd.families.late_interaction.VectorCache`);
:meth:`BgeM3Family.encode_outputs` gives the three outputs of texts for embedding APIs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import (
    DEFAULT_CALL,
    Activation,
    CallOptions,
    Capabilities,
    Encoded,
    FamilyLimits,
    FamilySpec,
    ModelOptions,
    Role,
    clean_backend,
    collate,
    encode_plain,
    pad_token_id,
    single_special_count,
)
from rerankd.families.late_interaction import TextVectors, VectorCache, join, maxsim, split
from rerankd.loading import ModelFiles, model_load_kwargs

HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")
DEFAULT_WEIGHTS = (1.0, 1.0, 1.0)
DEFAULT_MAX_LENGTH = 512


class M3Heads(torch.nn.Module):
    def __init__(self, hidden: int, colbert_dim: int) -> None:
        super().__init__()
        self.colbert_linear = torch.nn.Linear(hidden, colbert_dim)
        self.sparse_linear = torch.nn.Linear(hidden, 1)


class M3Network(torch.nn.Module):
    """The encoder (``model``) and the two extra heads, castable together."""

    def __init__(self, model: Any, heads: M3Heads) -> None:
        super().__init__()
        self.model = model
        self.heads = heads


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(w) for w in weights)
    if len(values) != 3 or any(w < 0 for w in values) or not 0 < sum(values) < math.inf:
        raise InvalidInput(
            f"score_weights must be three non-negative numbers (dense, sparse, multi-vector) with a positive, finite "
            f"sum, got {list(weights)}",
            param="score_weights",
        )
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class _M3Vectors:
    dense: torch.Tensor
    sparse_ids: torch.Tensor
    sparse_weights: torch.Tensor
    multi: torch.Tensor


def _full(vectors: TextVectors) -> _M3Vectors:
    assert vectors.dense is not None and vectors.sparse_ids is not None
    assert vectors.sparse_weights is not None and vectors.multi is not None
    return _M3Vectors(vectors.dense, vectors.sparse_ids, vectors.sparse_weights, vectors.multi)


class BgeM3Family:
    """bge-m3: the weighted dense + sparse + multi-vector score of each (query, document) pair."""

    family = "bge-m3"
    activation: Activation = "identity"
    outputs = ("dense", "sparse", "multi_vector")

    def __init__(self, network: M3Network, tokenizer: Any, options: ModelOptions, cache_bytes: int) -> None:
        self.network = network
        self.device: torch.device = next(network.parameters()).device
        self.backend = clean_backend(tokenizer)
        self.n_special = single_special_count(self.backend)
        self.document_length = options.max_length or DEFAULT_MAX_LENGTH
        self.query_length = options.query_max_length or DEFAULT_MAX_LENGTH
        self.limits = FamilyLimits(max_length=self.query_length + self.document_length, pad_side="right")
        self.pad_id = pad_token_id(tokenizer)
        special = (tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id)
        self.unused = torch.tensor(sorted({int(t) for t in special if t is not None}), dtype=torch.long)
        self.vocab_size = int(network.model.get_input_embeddings().weight.shape[0])
        self.weights_default = check_weights(options.score_weights or DEFAULT_WEIGHTS)
        self.cache: VectorCache[TextVectors] = VectorCache(cache_bytes)

    def weights(self) -> torch.nn.Module:
        return self.network

    def weights_version(self) -> object:
        """What cached document vectors depend on besides the ids: the weights' dtype (the guard may cast them)."""
        return next(self.network.parameters()).dtype

    def _encode(self, texts: Sequence[str], limit: int) -> list[Encoded]:
        out = []
        for enc in encode_plain(self.backend, texts):
            full = len(enc.ids) + self.n_special
            enc.truncate(max(limit - self.n_special, 0))
            joined = self.backend.post_process(enc, None, add_special_tokens=True)
            out.append(Encoded(input_ids=tuple(joined.ids), full_length=full))
        return out

    def encode_texts(self, texts: Sequence[str], role: Role) -> list[Encoded]:
        return self._encode(texts, self.query_length if role == "query" else self.document_length)

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        self.call_weights(call)
        q = self._encode([query], self.query_length)[0]
        docs = self._encode(documents, self.document_length)
        return [join(q.input_ids, d.input_ids, q.full_length + d.full_length) for d in docs]

    def call_weights(self, call: CallOptions) -> tuple[float, float, float]:
        return self.weights_default if call.score_weights is None else check_weights(call.score_weights)

    def vectors(self, ids: Sequence[tuple[int, ...]]) -> list[TextVectors]:
        """The three outputs of each token-id sequence (one padded forward pass)."""
        batch = [Encoded(input_ids=row) for row in ids]
        inputs = collate(batch, pad_id=self.pad_id, pad_side="right", device=self.device)
        with torch.inference_mode():
            hidden = self.network.model(**inputs).last_hidden_state
            heads = self.network.heads
            token_weights = torch.relu(heads.sparse_linear(hidden)).squeeze(-1).float()
            multi = heads.colbert_linear(hidden[:, 1:]).float()
        out = []
        for row, row_ids in enumerate(ids):
            n = len(row_ids)
            token_ids = inputs["input_ids"][row, :n].cpu()
            weights = token_weights[row, :n].cpu()
            unique = torch.unique(token_ids)
            best = torch.zeros(unique.shape[0]).scatter_reduce(
                0, torch.searchsorted(unique, token_ids), weights, reduce="amax"
            )
            keep = (best > 0) & ~torch.isin(unique, self.unused)
            out.append(
                TextVectors(
                    dense=torch.nn.functional.normalize(hidden[row, 0].float(), dim=-1).cpu(),
                    sparse_ids=unique[keep],
                    sparse_weights=best[keep],
                    multi=torch.nn.functional.normalize(multi[row, : n - 1], dim=-1).cpu(),
                )
            )
        return out

    def encode_outputs(self, items: Sequence[Encoded]) -> list[TextVectors]:
        """Dense, sparse and multi-vector outputs of encoded texts (:meth:`encode_texts`), in order."""
        return self.vectors([item.input_ids for item in items])

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        w_dense, w_sparse, w_multi = self.call_weights(call)
        parts = split(batch)
        queries = self.vectors(parts.queries)
        documents = self.cache.get_many(parts.documents, self.vectors, version=self.weights_version())
        lexicon = torch.zeros((len(queries), self.vocab_size))
        for row, vectors in enumerate(queries):
            lexicon[row, _full(vectors).sparse_ids] = _full(vectors).sparse_weights
        scores = []
        for qi, di in zip(parts.query_of, parts.document_of, strict=True):
            q, d = _full(queries[qi]), _full(documents[di])
            dense = q.dense @ d.dense
            sparse = (lexicon[qi, d.sparse_ids] * d.sparse_weights).sum()
            multi = maxsim(q.multi, d.multi) / max(q.multi.shape[0], 1)
            scores.append((w_dense * dense + w_sparse * sparse + w_multi * multi) / (w_dense + w_sparse + w_multi))
        return torch.stack(scores).unsqueeze(1).float()


def _load_head(files: ModelFiles, name: str, layer: torch.nn.Linear) -> None:
    state = torch.load(files.path / name, map_location="cpu", weights_only=True)
    try:
        layer.load_state_dict(state)
    except RuntimeError as exc:
        raise UnsupportedModel(f"{files.requested}: {name} does not fit the encoder: {exc}") from exc


def load_bge_m3(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> BgeM3Family:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(str(files.path), dtype=dtype, **model_load_kwargs(files, trust_remote_code))
    hidden = int(model.config.hidden_size)
    colbert_state = torch.load(files.path / HEAD_FILES[0], map_location="cpu", weights_only=True)
    heads = M3Heads(hidden, int(colbert_state["weight"].shape[0]))
    _load_head(files, HEAD_FILES[0], heads.colbert_linear)
    _load_head(files, HEAD_FILES[1], heads.sparse_linear)
    network = M3Network(model, heads.to(dtype))
    network.to(device).eval()
    return BgeM3Family(network, tokenizer, options, cache_bytes=256 * 2**20)


def _detect(files: ModelFiles) -> bool:
    return all((files.path / name).is_file() for name in HEAD_FILES)


SPEC = FamilySpec(
    name=BgeM3Family.family,
    summary="bge-m3: weighted dense + sparse (lexical) + multi-vector (ColBERT) score, weights per call",
    detection="a folder with colbert_linear.pt and sparse_linear.pt next to the encoder (BAAI/bge-m3)",
    detect=_detect,
    load=load_bge_m3,
    known_ids=("BAAI/bge-m3",),
    capabilities=Capabilities(text_outputs=BgeM3Family.outputs, document_cache=True, score_weights=True),
)
