"""Tiny random Qwen3 / Gemma causal LMs with tokenizers trained in-process (no hub, milliseconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from rerankd import Reranker
from tests.tiny_models import corpus, make_words, vocab_and_merges

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>"]
QWEN_ADDED = ["<think>", "</think>"]
TEMPLATE_TEXT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no". system user assistant Instruct Query Document '
    "Given a web search query, retrieve relevant passages that answer the query. "
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'. yes no Yes No A: B: \n\n"
)


def _training_texts() -> list[str]:
    words = make_words()
    answers = ["yes", "no", "Yes", "No"] * 20
    return answers + [TEMPLATE_TEXT] * 5 + [" ".join(words)] * 3 + corpus(seed=11, n=200, min_words=5, max_words=25)


def qwen_tokenizer(texts: list[str] | None = None, vocab_size: int = 700) -> Any:
    """A byte-level BPE tokenizer in Qwen2's pipeline with Qwen3's chat specials; "yes"/"no" single tokens.
    Trained on ``texts`` (default: the tests' toy texts); benchmarks/models.py trains it at real size."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.NFC()
    trainer_tok.pre_tokenizer = Qwen2Tokenizer().backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    trainer_tok.train_from_iterator(_training_texts() if texts is None else texts, trainer)
    vocab, merges = vocab_and_merges(trainer_tok)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED])
    for word in ("yes", "no"):
        assert tokenizer.tokenize(word) == [word], word
    return tokenizer


def gemma_tokenizer() -> Any:
    """A SentencePiece-style BPE (spaces as "▁", byte fallback) with Gemma's special token ids."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "\u2581")
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    trainer_tok.train_from_iterator(_training_texts(), trainer)
    trained, merges = vocab_and_merges(trainer_tok)
    ordered = specials + [f"<0x{b:02X}>" for b in range(256)]
    ordered += [tok for tok, _ in sorted(trained.items(), key=lambda kv: kv[1]) if tok not in specials]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(ordered))}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges)
    assert tokenizer.tokenize("Yes") == ["Yes"]
    return tokenizer


def _common(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        initializer_range=0.25,
    )


def build_qwen3(folder: Path, seed: int = 0, tied: bool = True) -> Path:
    """A 2-layer Qwen3ForCausalLM (tied embeddings like Qwen3-Reranker-0.6B, untied like -8B)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen_tokenizer()
    common = _common(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=tied,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **common,
    )
    model = Qwen3ForCausalLM(config)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_gemma(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GemmaForCausalLM (tied embeddings, as bge-reranker-v2-gemma)."""
    from transformers import GemmaConfig, GemmaForCausalLM

    tokenizer = gemma_tokenizer()
    config = GemmaConfig(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=2, **_common(seed))
    model = GemmaForCausalLM(config)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_reranker(path: Path, *, normalize: bool = False, prefix_sharing: bool = True, **options: object) -> Reranker:
    """``Reranker.from_pretrained`` in float32 on the CPU with explicit family options."""
    return Reranker.from_pretrained(
        str(path), device="cpu", dtype="float32", normalize=normalize, prefix_sharing=prefix_sharing, **options
    )
