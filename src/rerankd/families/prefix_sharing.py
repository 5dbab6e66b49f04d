"""Decoder-only LLM bodies for yes/no style reranking heads, with query-prefix sharing.

An LLM reranker is a causal LM read at one position through one or two rows of its vocabulary projection.
This module loads the transformer body without that projection (``AutoModel``: the ``lm_head`` is never
built, so full-vocabulary logits cannot be computed), fetches just the ``lm_head`` rows a head needs, and
runs batches of :class:`~rerankd.families.base.Encoded` sequences to the final hidden state at each row's
last real token.

Prefix sharing: every sequence of one query starts with the same tokens (system prompt, instruction, query),
declared by ``Encoded.prefix_length``. Rows are grouped by identical prefix ids; the distinct prefixes run
once (batch = number of groups), their key/value cache is gathered to the rows, and only each row's tail
(document + suffix) runs on top, with position ids continuing after its own prefix and an attention mask that
hides the padding of shorter prefixes. Scores equal the unshared forward pass up to float rounding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from rerankd.errors import UnsupportedModel
from rerankd.families.base import Encoded, collate
from rerankd.loading import ModelFiles, model_load_kwargs

logger = logging.getLogger(__name__)

LM_HEAD_KEY = "lm_head.weight"


@dataclass(frozen=True)
class SharedLayout:
    """A batch split into distinct prefixes and per-row tails, as padded tensors (right padding)."""

    prefix_ids: torch.Tensor  # (groups, longest prefix)
    prefix_mask: torch.Tensor  # (groups, longest prefix)
    row_group: torch.Tensor  # (rows,) index of each row's prefix
    prefix_lengths: torch.Tensor  # (rows,)
    tail_ids: torch.Tensor  # (rows, longest tail)
    tail_mask: torch.Tensor  # (rows, longest tail)


def shared_layout(batch: Sequence[Encoded], pad_id: int) -> SharedLayout | None:
    """Group rows by identical prefix ids; None when sharing would save nothing (or a row has no prefix)."""
    if any(not 0 < item.prefix_length < len(item) for item in batch):
        return None
    group_of: dict[tuple[int, ...], int] = {}
    row_group = [group_of.setdefault(item.input_ids[: item.prefix_length], len(group_of)) for item in batch]
    if len(group_of) == len(batch):
        return None
    prefixes = [Encoded(input_ids=ids) for ids in group_of]
    tails = [Encoded(input_ids=item.input_ids[item.prefix_length :]) for item in batch]
    device = torch.device("cpu")
    padded_prefixes = collate(prefixes, pad_id=pad_id, pad_side="right", device=device)
    padded_tails = collate(tails, pad_id=pad_id, pad_side="right", device=device)
    return SharedLayout(
        prefix_ids=padded_prefixes["input_ids"],
        prefix_mask=padded_prefixes["attention_mask"],
        row_group=torch.tensor(row_group, dtype=torch.long),
        prefix_lengths=torch.tensor([item.prefix_length for item in batch], dtype=torch.long),
        tail_ids=padded_tails["input_ids"],
        tail_mask=padded_tails["attention_mask"],
    )


class PrefixSharingDecoder:
    """A causal LM body (no vocabulary projection) returning the final hidden state at each last real token."""

    def __init__(
        self, model: Any, pad_id: int, *, prefix_sharing: bool = True, pad_to_multiple_of: int | None = None
    ) -> None:
        self.model = model
        self.device: torch.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.prefix_sharing = prefix_sharing
        self.pad_to_multiple_of = pad_to_multiple_of

    def last_hidden(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """``(len(batch), hidden)`` float32 final hidden states (after the final norm) at each last real token."""
        with torch.inference_mode():
            layout = shared_layout(batch, self.pad_id) if self.prefix_sharing else None
            hidden = self._full(batch) if layout is None else self._shared(layout)
        return hidden.float()

    def _full(self, batch: Sequence[Encoded]) -> torch.Tensor:
        inputs = collate(
            batch,
            pad_id=self.pad_id,
            pad_side="right",
            device=self.device,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        states = self.model(**inputs, use_cache=False).last_hidden_state
        last = inputs["attention_mask"].sum(dim=1) - 1
        return states[torch.arange(states.shape[0], device=self.device), last]

    def _shared(self, layout: SharedLayout) -> torch.Tensor:
        from transformers import DynamicCache

        to = self.device
        cache = DynamicCache(config=self.model.config)
        prefix_mask = layout.prefix_mask.to(to)
        prefix_ids = layout.prefix_ids.to(to)
        self.model(input_ids=prefix_ids, attention_mask=prefix_mask, past_key_values=cache, use_cache=True)
        row_group = layout.row_group.to(to)
        tail_mask = layout.tail_mask.to(to)
        steps = torch.arange(tail_mask.shape[1], device=to)
        out = self.model(
            input_ids=layout.tail_ids.to(to),
            attention_mask=torch.cat([prefix_mask[row_group], tail_mask], dim=1),
            position_ids=layout.prefix_lengths.to(to).unsqueeze(1) + steps,
            past_key_values=prefix_cache_for_rows(cache, row_group),
            use_cache=True,
        )
        last = tail_mask.sum(dim=1) - 1
        return out.last_hidden_state[torch.arange(last.shape[0], device=to), last]


def prefix_cache_for_rows(cache: Any, row_group: torch.Tensor) -> Any:
    """The prefixes' key/value cache addressed per row, for one forward pass over the rows' tails.

    Plain full-attention layers become read-only ``PrefixLayer`` views that join the prefix with the tail's keys
    and values without storing the result, so the pass holds no more than an uncached forward would. Any other
    layer kind (sliding window, ...) falls back to the regular cache gathered to the rows.
    """
    from transformers.cache_utils import Cache, DynamicLayer

    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.batch_select_indices(row_group)
        return cache
    single = bool((row_group == 0).all())
    rows = row_group.shape[0]

    def gather(states: torch.Tensor) -> torch.Tensor:
        return states.expand(rows, -1, -1, -1) if single else states[row_group]

    prefix_layer = _prefix_layer_class()
    return Cache(layers=[prefix_layer(gather(layer.keys), gather(layer.values)) for layer in cache.layers])


@cache
def _prefix_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class PrefixLayer(DynamicLayer):
        """A read-only layer cache: returns ``prefix ++ new`` keys/values, keeps only the prefix."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values
            self.prefix_keys, self.prefix_values = keys, values

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            keys = torch.cat([self.prefix_keys, key_states], dim=-2)
            return keys, torch.cat([self.prefix_values, value_states], dim=-2)

    return PrefixLayer


def _ties_embeddings(config: Any) -> bool:
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return bool(getattr(text, "tie_word_embeddings", False))


def _checkpoint_file_with(files: ModelFiles, key: str) -> str | None:
    """The safetensors file holding ``key`` (single-file or sharded checkpoints), or None."""
    index = files.path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        name = weight_map.get(key)
        return str(files.path / name) if name else None
    single = files.path / "model.safetensors"
    if not single.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as handle:
        return str(single) if key in handle.keys() else None  # noqa: SIM118 - safe_open has no __contains__


def _rows_from_checkpoint(file: str, token_ids: Sequence[int]) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(file, framework="pt") as handle:
        weight = handle.get_slice(LM_HEAD_KEY)
        return torch.stack([weight[token_id : token_id + 1][0] for token_id in token_ids]).float()


def load_decoder_with_rows(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, token_ids: Sequence[int]
) -> tuple[Any, torch.Tensor]:
    """The model body (``AutoModel``) on ``device`` plus ``lm_head`` rows ``token_ids`` as float32 ``(k, hidden)``.

    Tied embeddings: the rows come from the input embedding. Untied: they are sliced from the safetensors
    checkpoint, so the full projection is never materialised; only for checkpoints without safetensors is the
    causal LM loaded whole once and its projection dropped after the rows are taken.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    kwargs = model_load_kwargs(files, trust_remote_code=False)  # built-in transformers classes only
    path = str(files.path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    tied = _ties_embeddings(config)
    head_file = None if tied else _checkpoint_file_with(files, LM_HEAD_KEY)
    ids = list(token_ids)
    if tied or head_file is not None:
        model = AutoModel.from_pretrained(path, config=config, dtype=dtype, **kwargs)
        embedding = model.get_input_embeddings().weight
        rows = _rows_from_checkpoint(head_file, ids) if head_file else embedding[ids].detach().float()
    else:
        logger.info("%s: no safetensors lm_head to slice; loading the causal LM once to take its rows", path)
        causal = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, **kwargs)
        rows = causal.get_output_embeddings().weight[ids].detach().float().clone()
        model = causal.get_decoder()
        del causal
    hidden = model.get_input_embeddings().weight.shape[-1]
    if tuple(rows.shape) != (len(ids), hidden):
        raise UnsupportedModel(f"{files.requested}: lm_head rows {tuple(rows.shape)} do not match hidden size {hidden}")
    model.to(device).eval()
    return model, rows.to(device)
