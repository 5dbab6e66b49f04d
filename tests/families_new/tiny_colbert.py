"""Tiny random PyLate folders written as PyLate saves them: a BERT answerai-colbert style model ([unused0]/[unused1]
markers, query expansion not attended) and an XLM-R jina-colbert-v2 style one ([QueryMarker]/[DocumentMarker],
expansion tokens attended)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch

from tests.tiny_models import bert_tokenizer, make_words, xlmr_tokenizer


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _pylate_files(folder: Path, hidden: int, dim: int, settings: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": 179, "do_lower_case": False})
    config = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim", **settings}
    _write_json(folder / "config_sentence_transformers.json", config)
    dense = {"in_features": hidden, "out_features": dim, "bias": False}
    dense |= {"activation_function": "torch.nn.modules.linear.Identity", "use_residual": False}
    _write_json(folder / "1_Dense" / "config.json", dense)
    weight = torch.randn(dim, hidden) * 0.3
    save_file({"linear.weight": weight}, str(folder / "1_Dense" / "model.safetensors"), metadata={"format": "pt"})


def build_colbert_bert(folder: Path, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel

    words = [*make_words(), "[unused0]", "[unused1]"]
    tokenizer = bert_tokenizer(words)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=0.3,
    )
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = {
        "query_prefix": "[unused0]",
        "document_prefix": "[unused1]",
        "query_length": 32,
        "document_length": 180,
        "attend_to_expansion_tokens": False,
        "skiplist_words": list(string.punctuation),
        "do_query_expansion": True,
    }
    _pylate_files(folder, 32, 16, settings)
    return folder


def build_colbert_xlmr(folder: Path, seed: int = 1) -> Path:
    from tokenizers import AddedToken
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = xlmr_tokenizer(make_words())
    tokenizer.add_tokens([AddedToken(t, special=False) for t in ("[QueryMarker]", "[DocumentMarker]")])
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
    settings = {
        "query_prefix": "[QueryMarker]",
        "document_prefix": "[DocumentMarker]",
        "query_length": 24,
        "document_length": 64,
        "attend_to_expansion_tokens": True,
        "skiplist_words": list(string.punctuation),
        "do_query_expansion": True,
    }
    _pylate_files(folder, 32, 24, settings)
    return folder
