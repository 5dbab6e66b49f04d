"""Late-interaction ColBERT models in PyLate folders (answerdotai/answerai-colbert-small-v1, jina-colbert-v2 style).

Reference: PyLate 1.6.0 (``pylate.models.ColBERT.encode`` + ``pylate.rank.rerank``), reading the folder's
``config_sentence_transformers.json`` (``query_prefix``, ``document_prefix``, ``query_length``, ``document_length``,
``attend_to_expansion_tokens``, ``skiplist_words``, ``do_query_expansion``) and ``modules.json`` (a Transformer then
one or more PyLate ``Dense`` projections).

- Texts are stripped (and lower-cased when ``sentence_bert_config.json`` says ``do_lower_case``), tokenised with the
  tokenizer's specials and cut to ``length - 1`` tokens; the marker token (``query_prefix`` / ``document_prefix``,
  e.g. ``[unused0]`` / ``[unused1]``) is inserted after the first special token.
- Queries are expanded to ``query_length`` (default 32) with the ``[MASK]`` token (query expansion); expansion
  tokens are attended to only with ``attend_to_expansion_tokens`` (jina-colbert-v2), but every query position,
  expansions included, yields a vector. Without expansion the real tokens do.
- Documents: up to ``document_length`` (default 180) tokens; tokens of ``skiplist_words`` (punctuation) yield no
  vector.
- Vectors: last hidden state -> Dense layer(s) -> L2 normalisation. Score: MaxSim, ``sum_i max_j q_i . d_j``
  (activation identity). ``query_max_length`` / ``max_length`` override the query / document lengths.

Document vectors are cached per model (:class:`~rerankd.families.late_interaction.VectorCache`), so a document seen
again (for another query, or a repeated request) is not encoded again. Query vectors are kept in a small cache of
their own (:data:`QUERY_CACHE_BYTES`), so a request cut into several token-budget batches encodes its query once, as
PyLate does, not once per batch (rerank-100: 9 batches, 9 query passes before); :meth:`ColbertFamily.encode_outputs`
gives the multi-vectors of texts for embedding APIs.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rerankd.errors import UnsupportedModel
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
    single_special_count,
)
from rerankd.families.late_interaction import DEFAULT_CACHE_BYTES, TextVectors, VectorCache, join, maxsim, split
from rerankd.loading import ModelFiles, model_load_kwargs

QUERY_CACHE_BYTES = 4 * 2**20  # ~250 queries of 32 x 128 float32 vectors


@dataclass(frozen=True)
class ColbertSettings:
    """What a PyLate folder declares (PyLate's defaults where it does not)."""

    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    attend_to_expansion_tokens: bool = False
    do_query_expansion: bool = True
    skiplist_words: tuple[str, ...] = tuple(string.punctuation)
    lowercase: bool = False

    @classmethod
    def read(cls, files: ModelFiles, options: ModelOptions) -> ColbertSettings:
        config = files.read_json("config_sentence_transformers.json")
        config = config if isinstance(config, dict) else {}
        st = files.read_json("sentence_bert_config.json")
        keys = ("query_prefix", "document_prefix", "query_length", "document_length", "attend_to_expansion_tokens")
        given: dict[str, Any] = {
            key: config[key] for key in (*keys, "do_query_expansion") if config.get(key) is not None
        }
        if config.get("skiplist_words") is not None:
            given["skiplist_words"] = tuple(config["skiplist_words"])
        given["lowercase"] = bool(isinstance(st, dict) and st.get("do_lower_case"))
        if options.query_max_length:
            given["query_length"] = options.query_max_length
        if options.max_length:
            given["document_length"] = options.max_length
        settings = cls(**given)
        if not settings.do_query_expansion:
            settings = cls(**{**given, "attend_to_expansion_tokens": False})
        return settings


class ColbertNetwork(torch.nn.Module):
    """The encoder and the projection layers (``Linear`` each, applied in order)."""

    def __init__(self, encoder: Any, projections: list[torch.nn.Linear]) -> None:
        super().__init__()
        self.encoder = encoder
        self.projections = torch.nn.ModuleList(projections)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**inputs).last_hidden_state
        for layer in self.projections:
            hidden = layer(hidden)
        return torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)


class ColbertFamily:
    """MaxSim over query and document token vectors, with cached document vectors."""

    family = "colbert"
    activation: Activation = "identity"
    outputs = ("multi_vector",)

    def __init__(self, network: ColbertNetwork, tokenizer: Any, settings: ColbertSettings, cache_bytes: int) -> None:
        self.network = network
        self.device: torch.device = next(network.parameters()).device
        self.settings = settings
        self.backend = clean_backend(tokenizer)
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names
        self.n_special = single_special_count(self.backend)
        self.query_marker = self._marker(tokenizer, settings.query_prefix)
        self.document_marker = self._marker(tokenizer, settings.document_prefix)
        expansion = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.eos_token_id
        self.expansion_id = int(expansion if expansion is not None else tokenizer.pad_token_id or 0)
        self.pad_id = self.expansion_id  # PyLate pads with the expansion token (masked out of attention)
        self.skip_ids = {int(tokenizer.convert_tokens_to_ids(word)) for word in settings.skiplist_words}
        self.limits = FamilyLimits(max_length=settings.query_length + settings.document_length, pad_side="right")
        self.cache: VectorCache[TextVectors] = VectorCache(cache_bytes)
        self.query_cache: VectorCache[TextVectors] = VectorCache(QUERY_CACHE_BYTES)

    @staticmethod
    def _marker(tokenizer: Any, prefix: str) -> int | None:
        if not prefix:
            return None
        token_id = tokenizer.convert_tokens_to_ids(prefix)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise UnsupportedModel(f"the ColBERT marker {prefix!r} is not a token of the model's tokenizer")
        return int(token_id)

    def weights(self) -> torch.nn.Module:
        return self.network

    def weights_version(self) -> object:
        """What cached document vectors depend on besides the ids: the weights' dtype (the guard may cast them)."""
        return next(self.network.parameters()).dtype

    def _encode(self, texts: Sequence[str], role: Role) -> list[Encoded]:
        s = self.settings
        marker = self.query_marker if role == "query" else self.document_marker
        length = s.query_length if role == "query" else s.document_length
        budget = length - (marker is not None)  # PyLate: max_seq_length = length - 1 with a marker
        texts = [text.strip().lower() if s.lowercase else text.strip() for text in texts]
        out = []
        for enc in encode_plain(self.backend, texts):
            full = len(enc.ids)
            enc.truncate(max(budget - self.n_special, 0))
            dropped = full - len(enc.ids)
            ids = list(self.backend.post_process(enc, None, add_special_tokens=True).ids)
            if role == "query" and s.do_query_expansion:
                ids += [self.expansion_id] * (budget - len(ids))
            if marker is not None:
                ids.insert(1, marker)
            out.append(Encoded(input_ids=tuple(ids), full_length=len(ids) + dropped))
        return out

    def encode_texts(self, texts: Sequence[str], role: Role) -> list[Encoded]:
        return self._encode(texts, role)

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        q = self._encode([query], "query")[0]
        return [
            join(q.input_ids, d.input_ids, q.full_length + d.full_length) for d in self._encode(documents, "document")
        ]

    def _is_query(self, ids: Sequence[int]) -> bool:
        if self.query_marker is not None and self.query_marker != self.document_marker:
            return len(ids) > 1 and ids[1] == self.query_marker
        return self.settings.do_query_expansion and len(ids) == self.settings.query_length

    def _vectors(self, rows: Sequence[tuple[int, ...]], query: bool) -> list[TextVectors]:
        batch = [Encoded(input_ids=row) for row in rows]
        inputs = collate(
            batch, pad_id=self.pad_id, pad_side="right", device=self.device, with_token_types=self.uses_token_types
        )
        keep = inputs["attention_mask"].bool()
        if query and self.settings.do_query_expansion:
            expansion = self._expansion_positions(rows, inputs["input_ids"].shape[1])
            keep = keep | expansion
            if not self.settings.attend_to_expansion_tokens:
                inputs["attention_mask"] = (inputs["attention_mask"].bool() & ~expansion).long()
        elif not query:
            keep = keep & ~torch.isin(inputs["input_ids"], torch.tensor(sorted(self.skip_ids), device=self.device))
        with torch.inference_mode():
            vectors = self.network(inputs).cpu()
        keep = keep.cpu()
        return [TextVectors(multi=vectors[row][keep[row]]) for row in range(len(rows))]

    def _expansion_positions(self, rows: Sequence[tuple[int, ...]], width: int) -> torch.Tensor:
        """The trailing expansion tokens of each query (after its closing special token)."""
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for row, ids in enumerate(rows):
            end = len(ids)
            while end > 0 and ids[end - 1] == self.expansion_id:
                end -= 1
            mask[row, end : len(ids)] = True
        return mask.to(self.device)

    def encode_outputs(self, items: Sequence[Encoded]) -> list[TextVectors]:
        """Multi-vectors of encoded texts (:meth:`encode_texts`), queries and documents alike, in order."""
        out: list[TextVectors | None] = [None] * len(items)
        for query in (True, False):
            positions = [i for i, item in enumerate(items) if self._is_query(item.input_ids) == query]
            if positions:
                for i, vectors in zip(
                    positions, self._vectors([items[i].input_ids for i in positions], query), strict=True
                ):
                    out[i] = vectors
        return [vectors for vectors in out if vectors is not None]

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        parts = split(batch)
        version = self.weights_version()
        queries = self.query_cache.get_many(parts.queries, lambda rows: self._vectors(rows, query=True), version)
        documents = self.cache.get_many(parts.documents, lambda rows: self._vectors(rows, query=False), version)
        scores = [
            maxsim(_multi(queries[q]), _multi(documents[d]))
            for q, d in zip(parts.query_of, parts.document_of, strict=True)
        ]
        return torch.stack(scores).unsqueeze(1).float()


def _multi(vectors: TextVectors) -> torch.Tensor:
    assert vectors.multi is not None
    return vectors.multi


def _dense_modules(files: ModelFiles) -> list[Path]:
    modules = files.read_json("modules.json")
    if not isinstance(modules, list):
        raise UnsupportedModel(f"{files.requested}: a PyLate folder needs modules.json")
    folders = []
    for module in modules[1:]:
        kind = str(module.get("type", ""))
        if not kind.endswith("Dense"):
            raise UnsupportedModel(f"{files.requested}: module {kind!r} is not supported after the Transformer")
        folders.append(files.path / str(module.get("path", "")))
    return folders


def _load_dense(folder: Path) -> torch.nn.Linear:
    import json

    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    if not activation.endswith("Identity") or config.get("use_residual"):
        raise UnsupportedModel(f"{folder}: Dense with {activation} / use_residual is not supported (Identity only)")
    layer = torch.nn.Linear(
        int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True))
    )
    file = folder / "model.safetensors"
    state = load_file(str(file)) if file.is_file() else torch.load(folder / "pytorch_model.bin", weights_only=True)
    layer.load_state_dict({key.removeprefix("linear."): value for key, value in state.items()})
    return layer


def load_colbert(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> ColbertFamily:
    from transformers import AutoModel, AutoTokenizer

    settings = ColbertSettings.read(files, options)
    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=trust_remote_code)
    encoder = AutoModel.from_pretrained(str(files.path), dtype=dtype, **model_load_kwargs(files, trust_remote_code))
    projections = [_load_dense(folder).to(dtype) for folder in _dense_modules(files)]
    network = ColbertNetwork(encoder, projections)
    network.to(device).eval()
    return ColbertFamily(network, tokenizer, settings, DEFAULT_CACHE_BYTES)


def _detect(files: ModelFiles) -> bool:
    modules = files.read_json("modules.json")
    if isinstance(modules, list) and any("pylate" in str(m.get("type", "")).lower() for m in modules):
        return True
    config = files.read_json("config_sentence_transformers.json")
    return isinstance(config, dict) and config.get("similarity_fn_name") == "MaxSim" and "query_prefix" in config


SPEC = FamilySpec(
    name=ColbertFamily.family,
    summary="late-interaction ColBERT (PyLate folders): MaxSim over token vectors, markers, query expansion",
    detection="a PyLate folder: modules.json with a pylate Dense, or config_sentence_transformers.json with "
    "similarity_fn_name MaxSim and query_prefix",
    detect=_detect,
    load=load_colbert,
    capabilities=Capabilities(text_outputs=ColbertFamily.outputs, document_cache=True),
)
