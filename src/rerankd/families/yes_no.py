"""LLM "yes/no" rerankers: Qwen3-Reranker and bge-reranker-v2-gemma (MODELS.md §2, §5).

Both are plain causal LMs asked whether a document answers a query; the score is read from the vocabulary
projection at the last real token. rerankd turns that projection into an ordinary scoring head at load time:

- **qwen3-yes-no** (Qwen/Qwen3-Reranker-0.6B/-4B/-8B, the Qwen3-Embedding repo's transformers recipe):
  ``prefix + body + suffix`` with the chat-template prefix/suffix below and body
  ``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}``, tokenised alone (no specials) and cut to
  ``max_length - len(prefix) - len(suffix)`` so the suffix survives (default max_length 8192). Raw score
  ``l_yes - l_no`` from the single fp32 row ``W[yes] - W[no]``; normalised: ``sigmoid`` of it, which is the
  recipe's ``softmax([l_no, l_yes])[1]``. ``instruction`` replaces the default instruction per call.
- **bge-gemma-yes** (BAAI/bge-reranker-v2-gemma, FlagEmbedding's FlagLLMReranker): pieces tokenised
  separately, ``[bos] + tok("A: "+q)[:query_max_length] + (tok("\\n") + tok("B: "+p)[:max_length])`` with the
  second part cut ``only_second``-style to ``max_length + len(sep) + len(prompt)`` in total, then
  ``+ tok("\\n") + tok(prompt)``; padding to a multiple of 8. Raw score: the ``'Yes'`` logit (row of the first
  id of ``tok('Yes')``); normalised: sigmoid. ``instruction`` replaces the prompt per call. Default max_length
  512 (FlagLLMReranker's default), query cap ``max_length * 3 // 4``.
  (bge-reranker-v2.5-gemma2-lightweight is its own family: :mod:`rerankd.families.gemma2_lightweight`.)

Detection: their configs (``Qwen3ForCausalLM``, ``GemmaForCausalLM``) do not say "reranker", so the
published ids are listed in ``FamilySpec.known_ids`` (matched on the hub id or the folder's name) and
``detect`` accepts nothing; fine-tunes need ``family=``.

The shared query prefix (everything before the document) is declared in ``Encoded.prefix_length`` and computed
once per batch and query by :class:`~rerankd.families.prefix_sharing.PrefixSharingDecoder`.
"""

from __future__ import annotations

import logging
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
from rerankd.loading import ModelFiles

logger = logging.getLogger(__name__)

QWEN_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN_DEFAULT_MAX_LENGTH = 8192

BGE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing "
    "a prediction of either 'Yes' or 'No'."
)
BGE_DEFAULT_MAX_LENGTH = 512
_PROMPT_CACHE_SIZE = 64


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if tuple(a[:n]) == tuple(b[:n]):
        return n
    return next(i for i in range(n) if a[i] != b[i])


def default_max_length(config: dict[str, Any], default: int) -> int:
    positions = config.get("max_position_embeddings")
    return min(default, positions) if isinstance(positions, int) and positions > 0 else default


class QwenYesNoFamily:
    """Qwen3-Reranker: ``sigmoid(l_yes - l_no)`` at the last token of the chat-templated judgement prompt."""

    family = "qwen3-yes-no"
    activation: Activation = "sigmoid"

    def __init__(self, decoder: PrefixSharingDecoder, head: torch.Tensor, tokenizer: Any, max_length: int) -> None:
        self.decoder = decoder
        self.head = head.float()  # (hidden,) = W[yes] - W[no], kept in fp32
        self.backend = clean_backend(tokenizer)
        self.prefix_ids = tuple(self.backend.encode(QWEN_PREFIX, add_special_tokens=False).ids)
        self.suffix_ids = tuple(self.backend.encode(QWEN_SUFFIX, add_special_tokens=False).ids)
        self.body_budget = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 1:
            raise UnsupportedModel(f"max_length={max_length} leaves no room for the Qwen3-Reranker prompt")
        self.limits = FamilyLimits(max_length=max_length, pad_side="right")

    def weights(self) -> torch.nn.Module:
        return self.decoder.model

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        instruction = QWEN_DEFAULT_INSTRUCTION if call.instruction is None else call.instruction
        head = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: "
        head_ids = encode_plain(self.backend, [head])[0].ids
        out = []
        for body in encode_plain(self.backend, [head + doc for doc in documents]):
            ids = body.ids[: self.body_budget]
            shared = len(self.prefix_ids) + common_prefix_length(head_ids, ids)
            out.append(
                Encoded(
                    input_ids=self.prefix_ids + tuple(ids) + self.suffix_ids,
                    full_length=len(self.prefix_ids) + len(body.ids) + len(self.suffix_ids),
                    prefix_length=shared,
                )
            )
        return out

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        hidden = self.decoder.last_hidden(batch)
        return (hidden @ self.head).unsqueeze(1).cpu()


class BgeGemmaYesFamily:
    """bge-reranker-v2-gemma: the ``'Yes'`` logit at the last token of the "A: q / B: p / prompt" layout."""

    family = "bge-gemma-yes"
    activation: Activation = "sigmoid"

    def __init__(
        self,
        decoder: PrefixSharingDecoder,
        head: torch.Tensor,
        tokenizer: Any,
        max_length: int,
        query_max_length: int | None = None,
        softcap: float | None = None,
    ) -> None:
        self.decoder = decoder
        self.head = head.float()  # (hidden,) = W['Yes']
        self.softcap = softcap
        self.backend = clean_backend(tokenizer)
        self.max_length = max_length
        self.query_max_length = query_max_length or max_length * 3 // 4
        bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
        self.bos_ids: tuple[int, ...] = (bos,) if bos is not None and bos != pad else ()
        self.sep_ids = tuple(encode_plain(self.backend, ["\n"])[0].ids)
        self._prompts: dict[str, tuple[int, ...]] = {}
        self.limits = FamilyLimits(max_length=max_length, pad_side="right", pad_to_multiple_of=8)

    def weights(self) -> torch.nn.Module:
        return self.decoder.model

    def _prompt_ids(self, prompt: str) -> tuple[int, ...]:
        ids = self._prompts.get(prompt)
        if ids is None:
            if len(self._prompts) >= _PROMPT_CACHE_SIZE:
                self._prompts.pop(next(iter(self._prompts)))
            ids = self._prompts[prompt] = tuple(encode_plain(self.backend, [prompt])[0].ids)
        return ids

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions = DEFAULT_CALL) -> list[Encoded]:
        prompt_ids = self._prompt_ids(BGE_PROMPT if call.instruction is None else call.instruction)
        query_ids = encode_plain(self.backend, ["A: " + query])[0].ids
        first = self.bos_ids + tuple(query_ids[: self.query_max_length])
        budget = self.max_length + len(self.sep_ids) + len(prompt_ids)
        out = []
        for doc in encode_plain(self.backend, ["B: " + doc for doc in documents]):
            second = self.sep_ids + tuple(doc.ids[: self.max_length])
            overflow = len(first) + len(second) - budget
            if 0 < overflow < len(second):  # FlagEmbedding keeps `second` whole when it cannot absorb the overflow
                second = second[:-overflow]
            full = len(self.bos_ids) + len(query_ids) + 2 * len(self.sep_ids) + len(doc.ids) + len(prompt_ids)
            out.append(
                Encoded(
                    input_ids=first + second + self.sep_ids + prompt_ids,
                    full_length=full,
                    prefix_length=len(first) + min(len(self.sep_ids), len(second)),
                )
            )
        return out

    def score(self, batch: Sequence[Encoded], call: CallOptions = DEFAULT_CALL) -> torch.Tensor:
        logits = self.decoder.last_hidden(batch) @ self.head
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits.unsqueeze(1).cpu()


def _tokenizer(files: ModelFiles) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=False)


def _single_token(tokenizer: Any, token: str, files: ModelFiles) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise UnsupportedModel(f"{files.requested}: the tokenizer has no {token!r} token, needed by the yes/no head")
    return int(token_id)


def _warn_remote_code(trust_remote_code: bool, family: str) -> None:
    if trust_remote_code:
        logger.warning("%s runs transformers' built-in classes; trust_remote_code is ignored", family)


def load_qwen3_yes_no(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> QwenYesNoFamily:
    _warn_remote_code(trust_remote_code, QwenYesNoFamily.family)
    tokenizer = _tokenizer(files)
    ids = [_single_token(tokenizer, "yes", files), _single_token(tokenizer, "no", files)]
    model, rows = load_decoder_with_rows(files, device, dtype, ids)
    decoder = PrefixSharingDecoder(model, pad_token_id(tokenizer, "eos"), prefix_sharing=options.prefix_sharing)
    max_length = options.max_length or default_max_length(files.config, QWEN_DEFAULT_MAX_LENGTH)
    return QwenYesNoFamily(decoder, rows[0] - rows[1], tokenizer, max_length)


def load_bge_gemma_yes(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, options: ModelOptions, trust_remote_code: bool
) -> BgeGemmaYesFamily:
    _warn_remote_code(trust_remote_code, BgeGemmaYesFamily.family)
    tokenizer = _tokenizer(files)
    yes_ids = tokenizer("Yes", add_special_tokens=False)["input_ids"]
    if not yes_ids:
        raise UnsupportedModel(f"{files.requested}: the tokenizer encodes 'Yes' as nothing")
    model, rows = load_decoder_with_rows(files, device, dtype, yes_ids[:1])
    decoder = PrefixSharingDecoder(
        model, pad_token_id(tokenizer, "eos"), prefix_sharing=options.prefix_sharing, pad_to_multiple_of=8
    )
    max_length = options.max_length or default_max_length(files.config, BGE_DEFAULT_MAX_LENGTH)
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return BgeGemmaYesFamily(decoder, rows[0], tokenizer, max_length, options.query_max_length, softcap)


def _never(files: ModelFiles) -> bool:
    return False


# The yes/no head row is a separate float32 tensor, outside weights(): nothing there to keep float32.
PREFIX_SHARING = Capabilities(prefix_sharing=True)

QWEN3_SPEC = FamilySpec(
    name=QwenYesNoFamily.family,
    summary="Qwen3-Reranker 0.6B/4B/8B: sigmoid(l_yes - l_no) on its chat-template judgement prompt",
    detection="published id Qwen/Qwen3-Reranker-* (or folder name), else family='qwen3-yes-no' (Qwen3ForCausalLM)",
    detect=_never,
    load=load_qwen3_yes_no,
    known_ids=("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B"),
    capabilities=PREFIX_SHARING,
)

BGE_GEMMA_SPEC = FamilySpec(
    name=BgeGemmaYesFamily.family,
    summary="bge-reranker-v2-gemma: the 'Yes' logit after the 'A: query / B: passage / prompt' layout",
    detection="published id BAAI/bge-reranker-v2-gemma (or folder name), else family='bge-gemma-yes' (Gemma causal LM)",
    detect=_never,
    load=load_bge_gemma_yes,
    known_ids=("BAAI/bge-reranker-v2-gemma",),
    capabilities=PREFIX_SHARING,
)

SPECS: tuple[FamilySpec, ...] = (QWEN3_SPEC, BGE_GEMMA_SPEC)
