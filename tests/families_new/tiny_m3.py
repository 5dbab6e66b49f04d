"""A tiny random bge-m3 folder: an XLM-R encoder with FlagEmbedding's two extra heads (colbert_linear.pt,
sparse_linear.pt) next to it, and a SentencePiece-style tokenizer built in-process."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_models import make_words, xlmr_tokenizer


def build_m3(folder: Path, seed: int = 0, colbert_dim: int = 32) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = xlmr_tokenizer(make_words())
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        initializer_range=0.3,
    )
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    colbert = torch.nn.Linear(32, colbert_dim)
    sparse = torch.nn.Linear(32, 1)
    with torch.no_grad():
        sparse.weight.mul_(3.0)
        sparse.bias.fill_(1.0)
    torch.save(colbert.state_dict(), folder / "colbert_linear.pt")
    torch.save(sparse.state_dict(), folder / "sparse_linear.pt")
    return folder
