"""Tiny random MiniCPM rerankers (layerwise and sequence-classification) and the reference models used as oracles.

Weights are seeded random tensors named exactly like the published checkpoints (FlagEmbedding's shipped
``LayerWiseMiniCPMForCausalLM`` loads them with ``strict=True`` in the parity tests), saved as safetensors next to
a config.json and a Llama-style tokenizer (BPE with "▁" spaces and byte fallback, ``<unk>``/``<s>``/``</s>``)
trained in-process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from tests.tiny_models import corpus, make_words, vocab_and_merges

N_LAYERS = 10
START_LAYER = 2
PROMPT_TEXT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'. A: B: Query: Instruction: Rank passages about animals."
)
SPECIALS = ["<unk>", "<s>", "</s>"]


def body_config(vocab_size: int, **extra: Any) -> dict[str, Any]:
    """A MiniCPM config.json body at toy size: 10 layers, GQA (4 query heads, 2 key/value heads)."""
    return {
        "model_type": "minicpm",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "scale_emb": 12,
        "dim_model_base": 16,
        "scale_depth": 1.4,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "attention_bias": False,
        "torch_dtype": "float32",
        **extra,
    }


def layerwise_config(vocab_size: int) -> dict[str, Any]:
    return body_config(
        vocab_size,
        architectures=["LayerWiseMiniCPMForCausalLM"],
        start_layer=START_LAYER,
        head_type="simple",
        head_multi=True,
        use_cache=False,
        tie_word_embeddings=False,
    )


def reranker_config(vocab_size: int, *, is_causal: bool = False) -> dict[str, Any]:
    return body_config(
        vocab_size,
        architectures=["MiniCPMForSequenceClassification"],
        is_causal=is_causal,
        num_labels=1,
        id2label={"0": "LABEL_0"},
        label2id={"LABEL_0": 0},
    )


def llama_tokenizer(texts: list[str] | None = None, vocab_size: int = 500) -> Any:
    """Llama-style BPE ("\u2581" spaces, byte fallback) with MiniCPM's <unk>/<s>/</s>, pad = <unk>. Trained on
    ``texts`` (default: the tests' toy texts); benchmarks/models.py trains it at real size."""
    from transformers import LlamaTokenizer

    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    if texts is None:
        texts = [PROMPT_TEXT] * 5 + [" ".join(make_words())] * 3 + corpus(seed=21, n=200, min_words=5, max_words=25)
    trainer_tok.train_from_iterator(texts, trainer)
    trained, merges = vocab_and_merges(trainer_tok)
    ordered = SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    ordered += [tok for tok, _ in sorted(trained.items(), key=lambda kv: kv[1]) if tok not in SPECIALS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(ordered))}
    return LlamaTokenizer(vocab=vocab, merges=merges, pad_token="<unk>")


def flag_classes() -> tuple[Any, Any]:
    """FlagEmbedding's shipped MiniCPM config and model classes (the parity oracle)."""
    from FlagEmbedding.inference.reranker.decoder_only.models.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    return LayerWiseMiniCPMConfig, LayerWiseMiniCPMForCausalLM


def flag_layerwise(folder: Path) -> Any:
    """FlagEmbedding's LayerWiseMiniCPMForCausalLM made to run under transformers 5 (MODELS.md §3): rope_scaling
    None, tied-weights declaration neutralised, built from the config and filled with ``load_state_dict``."""
    from safetensors.torch import load_file

    config_cls, model_cls = flag_classes()
    config = config_cls(**json.loads((folder / "config.json").read_text()))
    config.rope_scaling = None
    config.use_cache = False
    config._attn_implementation = "sdpa"
    model_cls._tied_weights_keys = None
    model = model_cls(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()


def random_state(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights at a scale that keeps activations O(1) and spreads the head outputs."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in sorted(shapes.items()):
        if name.endswith("norm.weight"):
            tensor = 1.0 + 0.2 * torch.randn(shape, generator=generator)
        elif "embed_tokens" in name:
            tensor = 0.1 * torch.randn(shape, generator=generator)
        elif "lm_head" in name or name.startswith("score"):
            tensor = 0.5 * torch.randn(shape, generator=generator)
        else:
            tensor = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
        state[name] = tensor.contiguous()
    return state


def checkpoint_shapes(config: dict[str, Any]) -> dict[str, torch.Size]:
    """Parameter names and shapes of a layerwise checkpoint. They come from rerankd's own MiniCPM network so
    that building the fixtures needs no oracle; the parity tests load the same file into FlagEmbedding's
    ``LayerWiseMiniCPMForCausalLM`` with ``strict=True``, which proves the names match the published layout."""
    from rerankd.families.layerwise import LayerwiseNetwork
    from rerankd.families.minicpm_model import MiniCPMConfig

    body = MiniCPMConfig.from_dict(config, causal=True)
    with torch.device("meta"):
        model = LayerwiseNetwork(body, int(config["start_layer"]), bool(config.get("head_multi", True)))
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def save_folder(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor], tokenizer: Any) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(folder / "model.safetensors"))
    tokenizer.save_pretrained(folder)
    return folder


def build_layerwise(folder: Path, seed: int = 0) -> Path:
    tokenizer = llama_tokenizer()
    config = layerwise_config(len(tokenizer))
    return save_folder(folder, config, random_state(checkpoint_shapes(config), seed), tokenizer)


def reranker_state(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Body keys as in the layerwise checkpoint (``model.*``) plus the Llama-style ``score`` head."""
    layout = {**config, "start_layer": START_LAYER}
    shapes = {k: v for k, v in checkpoint_shapes(layout).items() if k.startswith("model.")}
    shapes["score.weight"] = torch.Size([1, config["hidden_size"]])
    return random_state(shapes, seed)


def build_reranker(folder: Path, seed: int = 1, *, is_causal: bool = False) -> Path:
    tokenizer = llama_tokenizer()
    config = reranker_config(len(tokenizer), is_causal=is_causal)
    return save_folder(folder, config, reranker_state(config, seed), tokenizer)
