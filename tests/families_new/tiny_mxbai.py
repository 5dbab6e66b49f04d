"""A tiny random Qwen2ForCausalLM saved under mxbai-rerank-base-v2's folder name, tokenizer trained in-process."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.llm_yes_no.tiny_llms import qwen_tokenizer
from tests.tiny_models import corpus, make_words

MXBAI_TEXT = (
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant. You are a search relevance expert who "
    "evaluates how well documents match search queries. For each query-document pair, carefully analyze the "
    "semantic relationship between them, then provide your binary relevance judgment (0 for not relevant, 1 for "
    "relevant).\nRelevance: query: document: instruction: system user assistant 0 1 yes no\n"
)


def build_mxbai(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    texts = (
        ["yes", "no"] * 20
        + [MXBAI_TEXT] * 5
        + [" ".join(make_words())] * 3
        + corpus(seed=11, n=200, min_words=5, max_words=25)
    )
    tokenizer = qwen_tokenizer(texts, vocab_size=600)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.25,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    Qwen2ForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
