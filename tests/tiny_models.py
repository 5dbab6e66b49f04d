"""Tiny random models and in-process tokenizers for tests: built once per session, never downloaded."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import torch

WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "are",
    "was",
    "what",
    "who",
    "how",
    "why",
    "where",
    "when",
    "panda",
    "bear",
    "giant",
    "species",
    "china",
    "capital",
    "france",
    "paris",
    "city",
    "machine",
    "learning",
    "data",
    "model",
    "search",
    "query",
    "document",
    "passage",
    "answer",
    "relevant",
    "bamboo",
    "forest",
    "animal",
    "europe",
    "river",
    "population",
    "language",
    "system",
    "network",
    "retrieval",
    "rank",
    "score",
    "hello",
    "world",
    "good",
    "bad",
    "small",
    "large",
    "fast",
    "slow",
    "red",
    "blue",
    "green",
    "time",
    "year",
    "people",
    "water",
    "food",
]
SYLLABLES = ["ka", "lo", "mi", "ter", "on", "ra", "zu", "pel", "vin", "dor", "qua", "shi", "ne", "bo"]


def make_words(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    extra = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(n)}
    return WORDS + sorted(extra - set(WORDS))


def sentence(rng: random.Random, words: list[str], n_words: int) -> str:
    text = " ".join(rng.choice(words) for _ in range(n_words))
    return text[:1].upper() + text[1:] + "."


def bert_tokenizer(words: list[str]):  # type: ignore[no-untyped-def]
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = specials + chars + words + ["##" + c for c in string.ascii_lowercase] + ["##s", "##ing", "##ed"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return BertTokenizer(vocab=vocab)


def xlmr_tokenizer(words: list[str]):  # type: ignore[no-untyped-def]
    from transformers import XLMRobertaTokenizer

    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0 - i * 0.01) for i, w in enumerate(words)]
    pieces += [(c, -20.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("\u2581", -10.0), ("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def build_cross_encoder(kind: str, folder: Path, seed: int = 0, max_positions: int = 128) -> Path:
    """A 2-layer BERT or XLM-R sequence classifier with one logit, saved with its tokenizer."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    words = make_words()
    torch.manual_seed(seed)
    common = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        initializer_range=0.3,
    )
    if kind == "bert":
        tokenizer = bert_tokenizer(words)
        config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max_positions, **common)
        model = BertForSequenceClassification(config)
    else:
        tokenizer = xlmr_tokenizer(words)
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_positions + 2,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            **common,
        )
        model = XLMRobertaForSequenceClassification(config)
    _spread_head(model)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _spread_head(model: torch.nn.Module) -> None:
    """Random init gives nearly equal logits; widen the head so orderings are meaningful in tests."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "classifier" in name and param.ndim == 2:
                param.mul_(3.0)


def corpus(seed: int, n: int, min_words: int, max_words: int) -> list[str]:
    rng = random.Random(seed)
    words = make_words()
    return [sentence(rng, words, rng.randint(min_words, max_words)) for _ in range(n)]


def vocab_and_merges(trained: Any) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """A trained ``tokenizers`` BPE model's vocabulary and merges (as (left, right) pairs, the form the BPE
    constructors of transformers' tokenizers take)."""
    model = json.loads(trained.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges
