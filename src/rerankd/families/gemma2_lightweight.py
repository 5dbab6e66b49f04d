"""bge-reranker-v2.5-gemma2-lightweight: Gemma-2 with per-layer heads, token compression and soft-capped logits.

Reference: FlagEmbedding 1.4.2 ``LightWeightFlagLLMReranker`` (``inference/reranker/decoder_only/lightweight.py``)
with its ``models/gemma_model.py``, which run only on transformers <= 4.47; rerankd runs its own body
(:mod:`rerankd.families.gemma2_model`) on transformers 5 and is checked against the reference in a transformers-4
virtual environment (tests/families_new/tf4).

Input, per pair (pieces tokenised separately, no special tokens), as §2 of MODELS.md with BOS always:
``[bos] + tok("A: " + query)[:query_max_length]`` then ``tok("\\n") + tok("B: " + passage)[:max_length]`` cut from
its end so the whole fits ``max_length + len(tok("\\n")) + len(tok(prompt))``, then ``+ tok("\\n") + tok(prompt)``.
Prompt ``Predict whether passage B contains an answer to query A.`` (a call's ``instruction`` replaces it); right
padding to a multiple of 8; ``max_length`` 512, ``query_max_length`` ``max_length * 3 // 4``.

Score: for each cutoff layer (``start_layer..num_hidden_layers`` by ``layer_sep``; default the last), the final-normed
hidden state at the last real token through a 1-output head, soft-capped ``cap * tanh(x / cap)``
(``final_logit_softcapping``, 30). As in the reference, the head of the ``i``-th requested cutoff (ascending) is
``lm_head[i]``, whatever the layer. Token compression: ``compress_ratio`` (1, 2, 4, 8; 1 = off) and
``compress_layers`` (default ``[8]``), per call or per model; see
:func:`~rerankd.families.gemma2_model.compress_tokens`.
Activation for normalised scores: sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

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
    clean_backend,
    collate,
    encode_plain,
    pad_token_id,
)
from rerankd.families.gemma2_model import Gemma2Body, Gemma2Config, Spans
from rerankd.families.minicpm_model import load_checkpoint, read_checkpoint
from rerankd.loading import ModelFiles

HEADS = ("lm_head.",)
DEFAULT_PROMPT = "Predict whether passage B contains an answer to query A."
DEFAULT_MAX_LENGTH = 512
DEFAULT_COMPRESS_LAYERS = (8,)
COMPRESS_RATIOS = (1, 2, 4, 8)
PAD_MULTIPLE = 8


class CostWiseHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(hidden_size, 1, bias=False)


class LightweightNetwork(nn.Module):
    """``model`` (the Gemma-2 body) and ``lm_head`` (one head per usable layer), as in the checkpoint."""

    def __init__(self, config: Gemma2Config, n_heads: int, softcap: float | None) -> None:
        super().__init__()
        self.model = Gemma2Body(config)
        self.lm_head = nn.ModuleList(CostWiseHead(config.hidden_size) for _ in range(n_heads))
        self.softcap = softcap

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        cutoffs: Sequence[int],
        compression: tuple[int, frozenset[int]] | None,
        spans: Spans,
    ) -> torch.Tensor:
        states = self.model(inputs["input_ids"], inputs["attention_mask"], cutoffs, compression, spans)
        columns = []
        for position, state in enumerate(states):
            head = self.lm_head[position]
            assert isinstance(head, CostWiseHead)
            logits = head.linear_head(state.float())
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            columns.append(logits)
        return torch.cat(columns, dim=1)


class Gemma2LightweightFamily:
    """bge-reranker-v2.5-gemma2-lightweight: per-layer scores, early exit, optional token compression."""

    family = "bge-gemma2-lightweight"
    activation: Activation = "sigmoid"

    def __init__(self, network: LightweightNetwork, tokenizer: Any, options: ModelOptions, layers: range) -> None:
        self.network = network
        self.device: torch.device = next(network.parameters()).device
        self.backend = clean_backend(tokenizer)
        max_length = options.max_length or DEFAULT_MAX_LENGTH
        self.limits = FamilyLimits(max_length=max_length, pad_side="right", pad_to_multiple_of=PAD_MULTIPLE)
        self.query_max_length = options.query_max_length or max_length * 3 // 4
        if tokenizer.bos_token_id is None:
            raise UnsupportedModel("the lightweight reranker's tokenizer has no BOS token")
        self.bos_id: int = tokenizer.bos_token_id
        self.pad_id = pad_token_id(tokenizer, "eos")
        self.layers = layers  # the layers with a head
        self.sep_ids = self._tokens("\n")
        self._prompts: dict[str, list[int]] = {DEFAULT_PROMPT: self._tokens(DEFAULT_PROMPT)}
        default = (network.model.config.num_hidden_layers,) if options.cutoff_layers is None else options.cutoff_layers
        self.default_cutoffs = self.check_cutoffs(default)
        self.default_ratio = self.check_ratio(options.compress_ratio or 1)
        given = options.compress_layers
        self.default_compress_layers = DEFAULT_COMPRESS_LAYERS if given is None else self.check_compress_layers(given)

    def weights(self) -> torch.nn.Module:
        return self.network

    def _tokens(self, text: str) -> list[int]:
        return list(encode_plain(self.backend, [text])[0].ids)

    def prompt_ids(self, instruction: str | None) -> list[int]:
        prompt = DEFAULT_PROMPT if instruction is None else instruction
        if prompt not in self._prompts:
            if len(self._prompts) > 64:
                self._prompts = {DEFAULT_PROMPT: self._prompts[DEFAULT_PROMPT]}
            self._prompts[prompt] = self._tokens(prompt)
        return self._prompts[prompt]

    def check_cutoffs(self, layers: Sequence[int]) -> tuple[int, ...]:
        bad = [x for x in layers if not isinstance(x, int) or isinstance(x, bool) or x not in self.layers]
        if not layers or bad or len(set(layers)) > len(self.network.lm_head):
            raise InvalidInput(
                f"cutoff_layers {list(layers)} invalid: this model scores layers {list(self.layers)}; "
                f"got {bad or 'none'}",
                param="cutoff_layers",
            )
        return tuple(sorted(set(layers)))

    @staticmethod
    def check_ratio(ratio: int) -> int:
        if ratio not in COMPRESS_RATIOS:
            raise InvalidInput(
                f"compress_ratio must be one of {list(COMPRESS_RATIOS)}, got {ratio!r}", param="compress_ratio"
            )
        return ratio

    def check_compress_layers(self, layers: Sequence[int]) -> tuple[int, ...]:
        """Layers that compression runs before: 1 .. num_hidden_layers - 1 (before layer 0 it never runs)."""
        top = self.network.model.config.num_hidden_layers - 1
        bad = [x for x in layers if not isinstance(x, int) or isinstance(x, bool) or not 1 <= x <= top]
        if not layers or bad:
            raise InvalidInput(
                f"compress_layers {list(layers)} invalid: compression runs before layers 1..{top} of this model; "
                f"got {bad or 'none'}",
                param="compress_layers",
            )
        return tuple(sorted(set(layers)))

    def plan(self, call: CallOptions) -> tuple[tuple[int, ...], tuple[int, frozenset[int]] | None]:
        """The call's cutoffs and compression ``(ratio, layers)`` (None when off), checked."""
        cutoffs = self.default_cutoffs if call.cutoff_layers is None else self.check_cutoffs(call.cutoff_layers)
        ratio = self.default_ratio if call.compress_ratio is None else self.check_ratio(call.compress_ratio)
        given = call.compress_layers
        layers = self.default_compress_layers if given is None else self.check_compress_layers(given)
        return cutoffs, None if ratio == 1 else (ratio, frozenset(layers))

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        self.plan(call)  # reject bad options before any work
        prompt_ids = self.prompt_ids(call.instruction)
        max_length = self.limits.max_length
        query_ids = self._tokens("A: " + query)
        first = [self.bos_id, *query_ids[: self.query_max_length]]
        budget = max_length + len(self.sep_ids) + len(prompt_ids)
        tail = [*self.sep_ids, *prompt_ids]
        encoded = []
        for passage in encode_plain(self.backend, ["B: " + doc for doc in documents]):
            second = [*self.sep_ids, *passage.ids[:max_length]]
            excess = len(first) + len(second) - budget
            if 0 < excess < len(second):
                second = second[:-excess]
            full = 1 + len(query_ids) + len(self.sep_ids) + len(passage.ids) + len(tail)
            # prefix_length: the query part the reference keeps whole under compression (BOS + query + "\n")
            prefix = len(first) + len(self.sep_ids)
            encoded.append(Encoded(input_ids=(*first, *second, *tail), full_length=full, prefix_length=prefix))
        return encoded

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        cutoffs, compression = self.plan(call)
        prompt = len(self.sep_ids) + len(self.prompt_ids(call.instruction))
        inputs = collate(
            batch, pad_id=self.pad_id, pad_side="right", device=self.device, pad_to_multiple_of=PAD_MULTIPLE
        )
        spans = Spans(
            query=torch.tensor([item.prefix_length for item in batch], device=self.device),
            prompt=torch.full((len(batch),), prompt, device=self.device),
        )
        with torch.inference_mode():
            return self.network(inputs, cutoffs, compression, spans).cpu()


def _layout(files: ModelFiles) -> tuple[Gemma2Config, range, float | None]:
    config = files.config
    body = Gemma2Config.from_dict(config)
    start, step = int(config.get("start_layer", 8)), int(config.get("layer_sep", 1))
    layers = range(start, body.num_hidden_layers + 1, max(step, 1))
    if not 0 <= start <= body.num_hidden_layers:
        raise UnsupportedModel(f"{files.requested}: start_layer {start} outside 0..{body.num_hidden_layers}")
    softcap = config.get("final_logit_softcapping")
    return body, layers, float(softcap) if softcap else None


def load_gemma2_lightweight(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> Gemma2LightweightFamily:
    from transformers import AutoTokenizer

    body, layers, softcap = _layout(files)
    with torch.device("meta"):
        network = LightweightNetwork(body, len(layers), softcap)
    load_checkpoint(network, read_checkpoint(files.path), dtype, keep_fp32=HEADS)
    network.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=False)
    return Gemma2LightweightFamily(network, tokenizer, options, layers)


def _detect(files: ModelFiles) -> bool:
    config = files.config
    names = [str(config.get("model_type", ""))] + [str(a) for a in config.get("architectures") or []]
    return bool(config.get("layer_wise")) and any("gemma" in name.lower() for name in names)


SPEC = FamilySpec(
    name=Gemma2LightweightFamily.family,
    summary="bge-reranker-v2.5-gemma2-lightweight: per-layer scores, early exit, token compression (compress_ratio)",
    detection="config layer_wise: true on a gemma/gemma2/cost_wise_gemma model (CostWiseGemmaForCausalLM)",
    detect=_detect,
    load=load_gemma2_lightweight,
    known_ids=("BAAI/bge-reranker-v2.5-gemma2-lightweight",),
    capabilities=Capabilities(fp32_heads=HEADS, layer_outputs=True, token_compression=True),
)
