"""A tiny random bge-reranker-v2.5-gemma2-lightweight folder: rerankd's own network layout saved as safetensors
(the checkpoint's key names), a Gemma-style tokenizer trained in-process, and the published config's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tests.llm_yes_no.tiny_llms import gemma_tokenizer

CONFIG: dict[str, Any] = {
    "architectures": ["CostWiseGemmaForCausalLM"],
    "model_type": "cost_wise_gemma",
    "layer_wise": True,
    "start_layer": 2,
    "layer_sep": 1,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "query_pre_attn_scalar": 8,
    "sliding_window": 24,
    "attn_logit_softcapping": 2.0,
    "final_logit_softcapping": 3.0,
    "attention_bias": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def build_lightweight(folder: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    from rerankd.families.gemma2_lightweight import LightweightNetwork
    from rerankd.families.gemma2_model import Gemma2Config

    tokenizer = gemma_tokenizer()
    config = dict(CONFIG, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    layers = config["num_hidden_layers"] + 1 - config["start_layer"]
    network = LightweightNetwork(Gemma2Config.from_dict(config), layers, None)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.2)
            elif name.startswith("lm_head."):
                param.normal_(0.0, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in network.state_dict().items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    tokenizer.save_pretrained(folder)
    return folder
