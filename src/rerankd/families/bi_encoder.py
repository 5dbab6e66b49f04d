"""Bi-encoders: embedding models used as rerankers (score = cosine of query and document vectors).

Pooling comes from the folder's sentence-transformers metadata (``modules.json`` -> ``1_Pooling/config.json``,
``sentence_bert_config.json`` for the length limit, ``config_sentence_transformers.json`` for the query
prompt) or, without it, from the architecture: CLS for encoders (the bge convention), last token for
decoder LLM embedders (Qwen3-Embedding). Every embedding is L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rerankd.errors import UnsupportedModel
from rerankd.families.base import (
    Capabilities,
    ComputeShape,
    Encoded,
    Family,
    FamilyLimits,
    FamilySpec,
    ModelOptions,
    OnnxOutput,
    Role,
    clean_backend,
    collate,
    encode_plain,
    float_module,
    last_token_index,
    pad_token_id,
    single_special_count,
)
from rerankd.families.encoder_backend import encoder_model, model_device
from rerankd.families.first_token import dense_shape, trim_last_layer
from rerankd.loading import ModelFiles, model_load_kwargs

ONNX_OUTPUT: OnnxOutput = "last_hidden_state"

_DECODER_TYPES = {"qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "minicpm"}
_ST_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


@dataclass(frozen=True)
class SentenceTransformersLayout:
    """What a sentence-transformers folder declares about its pipeline."""

    transformer_dir: Path
    pooling: str | None
    max_length: int | None
    query_prompt: str | None


def read_st_layout(files: ModelFiles) -> SentenceTransformersLayout:
    modules = files.read_json("modules.json")
    transformer_dir, pooling = files.path, None
    if isinstance(modules, list):
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]  # ST <6 and >=6 use different module paths
            if kind == "Transformer" and module.get("path"):
                transformer_dir = files.path / module["path"]
            if kind == "Pooling":
                pooling = _pooling_from(files.read_json(f"{module.get('path', '')}/config.json"))
    st_config = files.read_json("sentence_bert_config.json")
    max_length = st_config.get("max_seq_length") if isinstance(st_config, dict) else None
    prompts = files.read_json("config_sentence_transformers.json")
    query_prompt = None
    if isinstance(prompts, dict):
        query_prompt = (prompts.get("prompts") or {}).get("query") or None
    return SentenceTransformersLayout(transformer_dir, pooling, max_length, query_prompt)


def _pooling_from(config: Any) -> str | None:
    """The pooling mode of a sentence-transformers Pooling config (``pooling_mode`` since ST 6, else the
    legacy ``pooling_mode_*`` booleans)."""
    if not isinstance(config, dict):
        return None
    declared = config.get("pooling_mode")
    if declared is not None:
        names = [declared] if isinstance(declared, str) else list(declared)
        modes = ["mean_sqrt_len" if name == "mean_sqrt_len_tokens" else name for name in names]
        if len(modes) == 1 and modes[0] in _ST_MODES.values():
            return str(modes[0])
        raise UnsupportedModel(f"pooling {declared!r} is not supported; rerankd supports {sorted(_ST_MODES.values())}")
    modes = [name for key, name in _ST_MODES.items() if config.get(key)]
    if len(modes) != 1:
        raise UnsupportedModel(f"pooling {modes or 'none'} is not supported; rerankd needs exactly one mode")
    return modes[0]


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce token states ``(batch, seq, dim)`` to one vector per row, ignoring padding."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        index = last_token_index(mask, "right")
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)


class BiEncoderFamily:
    """Encodes texts to L2-normalised vectors."""

    family = "bi-encoder"

    def __init__(self, model: Any, tokenizer: Any, pooling: str, max_length: int, query_prompt: str | None) -> None:
        self.model = model
        self.device: torch.device = model_device(model)
        self.backend = clean_backend(tokenizer)
        self.pooling = pooling
        self.query_prompt = query_prompt
        self.limits = FamilyLimits(max_length=max_length, pad_side="right")
        self.pad_id = pad_token_id(tokenizer)
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names
        self.model_dir: Path | None = None  # the transformer's folder (a sentence-transformers module path)
        self.n_special = single_special_count(self.backend)

    def weights(self) -> torch.nn.Module:
        return float_module(self.model)

    def encode_texts(self, texts: Sequence[str], role: Role) -> list[Encoded]:
        if role == "query" and self.query_prompt:
            texts = [self.query_prompt + text for text in texts]
        out = []
        budget = self.limits.max_length - self.n_special
        for enc in encode_plain(self.backend, texts):
            full = len(enc.ids) + self.n_special
            enc.truncate(budget)
            joined = self.backend.post_process(enc, None, add_special_tokens=True)
            types = tuple(joined.type_ids) if self.uses_token_types else None
            out.append(Encoded(input_ids=tuple(joined.ids), token_type_ids=types, full_length=full))
        return out

    def embed(self, batch: Sequence[Encoded]) -> torch.Tensor:
        inputs = collate(
            batch, pad_id=self.pad_id, pad_side="right", device=self.device, with_token_types=self.uses_token_types
        )
        hidden = self.model(**inputs).last_hidden_state
        vectors = pool(hidden.float(), inputs["attention_mask"], self.pooling)
        return torch.nn.functional.normalize(vectors, p=2, dim=-1).cpu()


def load_bi_encoder(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> BiEncoderFamily:
    from transformers import AutoModel, AutoTokenizer

    layout = read_st_layout(files)
    pooling = options.pooling
    if pooling == "auto":
        is_decoder = files.config.get("model_type") in _DECODER_TYPES
        pooling = layout.pooling or ("lasttoken" if is_decoder else "cls")  # type: ignore[assignment]
    folder = str(layout.transformer_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)

    def build() -> torch.nn.Module:
        return AutoModel.from_pretrained(folder, dtype=dtype, **model_load_kwargs(files, trust_remote_code))

    model = encoder_model(layout.transformer_dir, build, tokenizer, ONNX_OUTPUT, device, dtype, options)
    if pooling == "cls" and isinstance(model, torch.nn.Module):  # torch only: cached ONNX graphs serve any pooling
        trim_last_layer(model, first_token_pooling=True)
    max_length = options.max_length or layout.max_length or min(int(tokenizer.model_max_length), 512)
    prompt = options.query_instruction if options.query_instruction is not None else layout.query_prompt
    family = BiEncoderFamily(model, tokenizer, pooling, max_length, prompt)
    family.model_dir = layout.transformer_dir
    return family


def _detect(files: ModelFiles) -> bool:
    if (files.path / "modules.json").is_file():
        return True
    archs = [str(a) for a in files.config.get("architectures") or []]
    return bool(archs) and all(a.endswith("Model") for a in archs)


def _compute_shape(family: Family) -> ComputeShape | None:
    assert isinstance(family, BiEncoderFamily)
    return dense_shape(family.model)


SPEC = FamilySpec(
    name="bi-encoder",
    summary="embedding models; score = cosine of L2-normalised query and document vectors",
    detection="a sentence-transformers folder (modules.json) or a bare *Model architecture",
    detect=_detect,
    load=load_bi_encoder,
    capabilities=Capabilities(onnx_output=ONNX_OUTPUT, compute_shape=_compute_shape),
)
