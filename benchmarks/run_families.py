"""Issue 18's families on rerank-100 vs their reference implementations, in one run, same inputs, fp32, CPU.

    python -m benchmarks.run_families --family all --runs 3
    python -m benchmarks.run_families --family lightweight --docs 100 --runs 3

Reduced-size random-weight models, built once into benchmarks/.models/ (speed does not depend on weight values):

- ``lightweight-narrow``: bge-reranker-v2.5-gemma2-lightweight's 42 layers with heads for layers 8..42, at hidden
  128 (4 heads of 32, 2 key/value heads, MLP 512), scored at cutoff layer 25. Engines: FlagEmbedding's
  ``LightWeightFlagLLMReranker`` (transformers 4.46, its own venv, time measured inside the worker) and rerankd,
  each with ``compress_ratio`` 2 (``compress_layers`` [8], FlagEmbedding's default) and without compression;
  ``--family lightweight-ratio`` times rerankd's two settings alone (more runs for the compression speed ratio).
- ``m3-small``: bge-m3's layout (XLM-R, vocab 250,002, colbert_linear hidden->hidden, sparse_linear) at 6 layers of
  384. Reference: ``BGEM3FlagModel.compute_score`` (its default batch of 256 pairs); rerankd with equal weights,
  document-vector cache off (``rerankd``) and warm (``rerankd cache-warm``: every document seen before).
- ``mxbai-narrow``: mxbai-rerank-base-v2's Qwen2 width (896 hidden, 14/2 heads, MLP 4864) at 4 layers, a 40k BPE
  vocabulary. Reference: the mxbai-rerank package's ``predict`` (one call for the query, full-vocabulary logits).
- ``colbert-small``: answerai-colbert-small-v1's shape (MiniLM, 384 hidden, 96-dim vectors) with the real
  all-MiniLM-L6-v2 encoder (6 layers; the published model has 12). Reference: PyLate 1.6.0 ``encode`` +
  ``rank.rerank`` (its own venv, time inside the worker); rerankd cache off / warm as for m3.

Each engine is loaded once and warmed on the whole input, then timed ``--runs`` times interleaved (run_rerank's
method). Appended to benchmarks/results/families-rerank-100.md with the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.models import ROOT, _minilm_dir, english_corpus, qwen3_tokenizer, xlmr_tokenizer_from_wordpiece
from benchmarks.run_rerank import Engine, measure, relative_delta, spearman
from benchmarks.workloads import WORKLOADS

Pairs = list[tuple[str, str]]
RESULTS = Path(__file__).resolve().parent / "results" / "families-rerank-100.md"


def _folder(name: str, build: Any) -> Path:
    folder = ROOT / name
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        build(folder)
        (folder / ".complete").write_text(json.dumps({"name": name}))
    return folder


# ------------------------------------------------------------------------------------------------ model builders
def _gemma_tokenizer() -> Any:
    from tests.tiny_models import vocab_and_merges
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "\u2581")
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=40000, special_tokens=specials, show_progress=False)
    trainer_tok.train_from_iterator(english_corpus(), trainer)
    trained, merges = vocab_and_merges(trainer_tok)
    ordered = specials + [f"<0x{b:02X}>" for b in range(256)]
    ordered += [tok for tok, _ in sorted(trained.items(), key=lambda kv: kv[1]) if tok not in specials]
    return GemmaTokenizer(vocab={tok: i for i, tok in enumerate(dict.fromkeys(ordered))}, merges=merges)


def build_lightweight(folder: Path) -> None:
    from safetensors.torch import save_file
    from tests.families_new.tiny_lightweight import CONFIG

    from rerankd.families.gemma2_lightweight import LightweightNetwork
    from rerankd.families.gemma2_model import Gemma2Config

    tokenizer = _gemma_tokenizer()
    config = dict(CONFIG, vocab_size=len(tokenizer), num_hidden_layers=42, start_layer=8, hidden_size=128)
    config |= {"intermediate_size": 512, "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 4096}
    config |= {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}
    torch.manual_seed(0)
    network = LightweightNetwork(Gemma2Config.from_dict(config), 42 + 1 - 8, None)
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer.save_pretrained(folder)


def build_m3(folder: Path) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=250002, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        max_position_embeddings=8194, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    xlmr_tokenizer_from_wordpiece().save_pretrained(folder)  # type: ignore[attr-defined]
    torch.save(torch.nn.Linear(384, 384).state_dict(), folder / "colbert_linear.pt")
    torch.save(torch.nn.Linear(384, 1).state_dict(), folder / "sparse_linear.pt")


def build_mxbai(folder: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer: Any = qwen3_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=896, intermediate_size=4864, num_hidden_layers=4,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_colbert(folder: Path) -> None:
    import shutil

    from tests.families_new.tiny_colbert import _pylate_files
    from transformers import AutoTokenizer, BertModel

    source = _minilm_dir()
    BertModel.from_pretrained(str(source), add_pooling_layer=False).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(folder)
    torch.manual_seed(0)
    settings = {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 32}
    settings |= {"document_length": 300, "attend_to_expansion_tokens": False, "do_query_expansion": True}
    _pylate_files(folder, 384, 96, settings)
    shutil.copy(source / "vocab.txt", folder / "vocab.txt")


# ----------------------------------------------------------------------------------------------------- engines
def rerankd_engine(path: Path, label: str, cache: bool = False, **options: Any) -> Engine:
    from rerankd import Reranker
    from rerankd.families.late_interaction import VectorCache

    model = Reranker.from_pretrained(str(path), device="cpu", dtype="float32", normalize=False, **options)
    family: Any = model.family
    if hasattr(family, "cache") and not cache:
        family.cache = VectorCache(0)

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        if not cache and hasattr(family, "query_cache"):
            family.query_cache.clear()  # cold: the query is encoded once per run, as the reference encodes it
        return [float(s) for s in model.score(pairs)]

    return Engine(label, score)


def lightweight_engines(path: Path) -> list[Engine]:
    from tests.families_new.tf4_oracle import start_oracle

    oracle = start_oracle(threads=torch.get_num_threads())
    engines = []
    for ratio in (2, 1):
        options = {"cutoff_layers": [25], "compress_ratio": ratio, "compress_layers": [8]}
        engines.append(
            Engine(
                f"flag compress {ratio}",
                lambda pairs, o=options: [float(s) for s in oracle.score(path, pairs, **o)],
                clock=lambda: oracle.last_seconds,
            )
        )
        label = f"rerankd compress {ratio}"
        engines.append(rerankd_engine(path, label, cutoff_layers=(25,), compress_ratio=ratio, compress_layers=(8,)))
    return engines


def lightweight_ratio_engines(path: Path) -> list[Engine]:
    """rerankd alone, cutoff 25, without and with compression (the speed ratio of token compression)."""
    options: dict[str, Any] = {"cutoff_layers": (25,), "compress_layers": (8,)}
    return [rerankd_engine(path, f"rerankd compress {r}", compress_ratio=r, **options) for r in (1, 2)]


def m3_engines(path: Path) -> list[Engine]:
    from FlagEmbedding import BGEM3FlagModel

    reference = BGEM3FlagModel(str(path), use_fp16=False, devices=["cpu"])
    flag = Engine("flag compute_score", lambda pairs: list(reference.compute_score(pairs)["colbert+sparse+dense"]))
    return [flag, rerankd_engine(path, "rerankd"), rerankd_engine(path, "rerankd cache-warm", cache=True)]


def mxbai_engines(path: Path) -> list[Engine]:
    from tests.families_new.mxbai_oracle import mxbai_reference

    reference = mxbai_reference(path)

    def package(pairs: Pairs) -> list[float]:  # the package's own batching (rank(): buckets of 32 by length)
        queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
        scores = reference._compute_scores(queries=queries, documents=docs, batch_size=32, show_progress=False)
        return [float(s) for s in scores]

    no_share = rerankd_engine(path, "rerankd no-prefix-sharing", family="mxbai-rerank-v2", prefix_sharing=False)
    return [
        Engine("mxbai-rerank (batch 32)", package),
        rerankd_engine(path, "rerankd", family="mxbai-rerank-v2"),
        no_share,
    ]


def colbert_engines(path: Path) -> list[Engine]:
    from tests.families_new.pylate_oracle import start_pylate

    oracle = start_pylate(threads=torch.get_num_threads())
    pylate = Engine("pylate encode+rerank", lambda pairs: oracle.score(path, pairs))
    pylate.clock = lambda: oracle.last_seconds
    return [pylate, rerankd_engine(path, "rerankd"), rerankd_engine(path, "rerankd cache-warm", cache=True)]


FAMILIES = {
    "lightweight": ("lightweight-narrow", build_lightweight, lightweight_engines),
    "lightweight-ratio": ("lightweight-narrow", build_lightweight, lightweight_ratio_engines),
    "m3": ("m3-small", build_m3, m3_engines),
    "mxbai": ("mxbai-narrow", build_mxbai, mxbai_engines),
    "colbert": ("colbert-small", build_colbert, colbert_engines),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(family: str, model: str, engines: list[Engine], n_pairs: int) -> str:
    base = engines[0]
    base_rate = n_pairs / statistics.median(base.times)
    lines = [
        f"### {family} / {model} / rerank-100 ({n_pairs} pairs) - {time.strftime('%Y-%m-%d %H:%M')} - "
        f"{cpu_name()}, torch threads {torch.get_num_threads()} (shared machine)",
        "",
        f"`python -m benchmarks.run_families {' '.join(sys.argv[1:])}`",
        "",
        f"| engine | pairs/s (median) | min-max | ratio to {base.name} | Spearman vs {base.name} "
        "| max abs delta / spread |",
        "|---|---|---|---|---|---|",
    ]
    for engine in engines:
        rates = sorted(n_pairs / t for t in engine.times)
        rate = statistics.median(rates)
        lines.append(
            f"| {engine.name} | {rate:.1f} | {rates[0]:.1f}-{rates[-1]:.1f} | {rate / base_rate:.2f} | "
            f"{spearman(engine.scores, base.scores):.4f} | {relative_delta(engine.scores, base.scores):.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="all", choices=["all", *FAMILIES])
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workload = WORKLOADS["rerank-100"]()
    pairs: Pairs = workload.pairs[: args.docs]
    for family in FAMILIES if args.family == "all" else [args.family]:
        name, build, make = FAMILIES[family]
        engines = make(_folder(name, build))
        measure(engines, pairs, args.runs)
        text = report(family, name, engines, len(pairs))
        print(text, flush=True)
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        assert all(np.isfinite(e.scores).all() for e in engines)


if __name__ == "__main__":
    main()
