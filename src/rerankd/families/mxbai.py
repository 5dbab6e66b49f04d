"""mxbai-rerank-v2 (mixedbread-ai/mxbai-rerank-base-v2 / -large-v2): a Qwen2 causal LM read as a "1"/"0" judge.

Reference: the ``mxbai-rerank`` package (0.1.6), ``MxbaiRerankV2.prepare_inputs`` / ``forward``. Per pair:

``chat prefix + q + tok("\\n") + d + tok("\\n") + tok(task prompt) + chat suffix`` where

- chat prefix/suffix: ``<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful
  assistant.<|im_end|>\\n<|im_start|>user\\n`` / ``<|im_end|>\\n<|im_start|>assistant\\n``;
- ``q = tok("query: {query}")[:max_length * 3 // 4]``, or with an instruction
  ``tok("instruction: {instruction}\\nquery: {query}")`` (a call's ``instruction``; none by default);
- ``d = tok("document: {doc}")[:min(max_length, positions - len(q) - static)]``, then ``"\\n" + d`` cut from its end
  so that ``q + "\\n" + d`` fits ``max_length`` (``only_second``);
- ``max_length`` (the reference's: the query-and-document budget, default 8192) is capped at the position table
  minus the static template tokens. ``limits.max_length`` is that budget plus the template.

Raw score: ``logit("1") - logit("0")`` at the last token (one float32 row ``W[1] - W[0]``, no full-vocabulary
projection). ``normalize`` applies a plain sigmoid; the package's optional ``normalize=True`` shifts it by a
model-specific constant first (``sigmoid(x - estimated_max / 2)``, 9 for base and 12 for large): same order.
Everything before the document (template prefix, query, separator) is one query's shared prefix, computed once per
batch (:class:`~rerankd.families.prefix_sharing.PrefixSharingDecoder`), as for Qwen3-Reranker.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    clean_backend,
    encode_plain,
    pad_token_id,
)
from rerankd.families.prefix_sharing import PrefixSharingDecoder, load_decoder_with_rows
from rerankd.families.yes_no import common_prefix_length
from rerankd.loading import ModelFiles

CHAT_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
TASK_PROMPT = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
SEP = "\n"
DEFAULT_MAX_LENGTH = 8192


def query_text(query: str, instruction: str | None) -> str:
    return f"instruction: {instruction}{SEP}query: {query}" if instruction else f"query: {query}"


class MxbaiRerankV2Family:
    """mxbai-rerank-v2: ``l("1") - l("0")`` at the last token of its chat-templated relevance prompt."""

    family = "mxbai-rerank-v2"
    activation: Activation = "sigmoid"

    def __init__(
        self, decoder: PrefixSharingDecoder, head: torch.Tensor, tokenizer: Any, max_length: int, positions: int
    ) -> None:
        self.decoder = decoder
        self.head = head.float()  # (hidden,) = W["1"] - W["0"]
        self.backend = clean_backend(tokenizer)
        self.prefix_ids = self._tokens(CHAT_PREFIX)
        self.sep_ids = self._tokens(SEP)
        self.tail_ids = self.sep_ids + self._tokens(TASK_PROMPT) + self._tokens(CHAT_SUFFIX)
        static = len(self.prefix_ids) + len(self.tail_ids)
        self.positions = positions
        self.static = static
        self.max_length = min(max_length, positions - static)
        if self.max_length < 8:
            raise UnsupportedModel(f"max_length={max_length} leaves no room for the mxbai-rerank-v2 template")
        self.limits = FamilyLimits(max_length=self.max_length + static, pad_side="right", pad_to_multiple_of=8)

    def _tokens(self, text: str) -> tuple[int, ...]:
        return tuple(encode_plain(self.backend, [text])[0].ids)

    def weights(self) -> torch.nn.Module:
        return self.decoder.model

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        query_full = self._tokens(query_text(query, call.instruction))
        query_ids = query_full[: self.max_length * 3 // 4]
        doc_budget = min(self.positions - len(query_ids) - self.static, self.max_length)
        head = self.prefix_ids + query_ids + self.sep_ids
        out = []
        for doc in encode_plain(self.backend, [f"document: {d}" for d in documents]):
            second = self.sep_ids + tuple(doc.ids[: max(doc_budget, 0)])
            excess = len(query_ids) + len(second) - self.max_length
            if 0 < excess < len(second):
                second = second[:-excess]
            ids = self.prefix_ids + query_ids + second + self.tail_ids
            full = self.static + len(query_full) + len(self.sep_ids) + len(doc.ids)
            shared = min(common_prefix_length(head, ids), len(ids) - 1)
            out.append(Encoded(input_ids=ids, full_length=full, prefix_length=shared))
        return out

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        return (self.decoder.last_hidden(batch) @ self.head).unsqueeze(1).cpu()


def _digit_id(tokenizer: Any, digit: str, files: ModelFiles) -> int:
    ids = tokenizer(digit, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UnsupportedModel(f"{files.requested}: the tokenizer encodes {digit!r} as nothing")
    return int(ids[0])


def load_mxbai_v2(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> MxbaiRerankV2Family:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=False)
    ids = [_digit_id(tokenizer, "1", files), _digit_id(tokenizer, "0", files)]
    model, rows = load_decoder_with_rows(files, device, dtype, ids)
    decoder = PrefixSharingDecoder(
        model, pad_token_id(tokenizer, "eos"), prefix_sharing=options.prefix_sharing, pad_to_multiple_of=8
    )
    positions = int(files.config.get("max_position_embeddings") or 32768)
    return MxbaiRerankV2Family(
        decoder, rows[0] - rows[1], tokenizer, options.max_length or DEFAULT_MAX_LENGTH, positions
    )


PUBLISHED = ("mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2")


def _qwen2_causal(files: ModelFiles) -> bool:
    return "Qwen2ForCausalLM" in (files.config.get("architectures") or [])


def _detect(files: ModelFiles) -> bool:
    """A renamed copy (or a transformers-4 fine-tune) of a published model: nothing else in the folder is particular
    (the tokenizer, chat template and generation config are Qwen2.5's), but its config.json names the published model
    in ``_name_or_path`` (large-v2's reads ``"_name_or_path": "mixedbread-ai/mxbai-rerank-large-v2"``)."""
    origin = str(files.config.get("_name_or_path") or "").strip().rstrip("/").lower()
    names = {model_id.lower().rsplit("/", 1)[-1] for model_id in PUBLISHED}
    return _qwen2_causal(files) and bool(origin) and origin.rsplit("/", 1)[-1] in names


SPEC = FamilySpec(
    name=MxbaiRerankV2Family.family,
    summary="mxbai-rerank-base/large-v2: l('1') - l('0') on its Qwen2 chat-template relevance prompt",
    detection="published id mixedbread-ai/mxbai-rerank-{base,large}-v2 (hub id, folder name, or config.json "
    "_name_or_path on a Qwen2ForCausalLM), else family='mxbai-rerank-v2'",
    detect=_detect,
    load=load_mxbai_v2,
    known_ids=PUBLISHED,
    capabilities=Capabilities(prefix_sharing=True),
    could_run=_qwen2_causal,
)
