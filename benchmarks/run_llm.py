"""LLM rerankers (issue 3): rerankd vs the official recipes on rerank-100, in one process, same inputs, fp32 and bf16.

    python -m benchmarks.run_llm --model qwen3-0.6b --docs 20 --runs 2
    python -m benchmarks.run_llm --model minicpm-layerwise-narrow --docs 50 --runs 3

Engines (``--engines``, comma list; the first is the baseline of the ratio column):

- qwen3-0.6b: ``official`` (the Qwen3-Reranker model card's transformers recipe, written here from its facts:
  ``AutoModelForCausalLM``, left padding, prefix + ``<Instruct>/<Query>/<Document>`` body + suffix,
  ``logits[:, -1, :]`` over the full vocabulary, log_softmax over [no, yes]; ``--peer-batch`` pairs per forward,
  in input order; default 16), ``rerankd`` (fp32, query-prefix sharing on, its default token budget),
  ``rerankd-noshare`` (the same with ``ModelOptions(prefix_sharing=False)``: what the prefix lever is worth);
  ``official-bf16`` / ``rerankd-bf16`` the same two in bfloat16, ``rerankd-defaults`` ``from_pretrained`` with no
  dtype (``dtype="auto"`` and its guard; the label names the dtype it chose).
- minicpm-layerwise-narrow: ``flag-12`` / ``flag-40`` (FlagEmbedding's ``LayerWiseFlagLLMReranker`` with its model
  loading swapped for the MODELS.md §3 recipe that works under transformers 5; ``--peer-batch``, default 32 as
  run_rerank's FlagReranker; every ``compute_score`` call first runs one batch of the longest inputs to probe the
  batch size, then the whole input),
  ``rerankd-12`` / ``rerankd-40`` (``score(pairs, cutoff_layers=[L])``); ``flag-12-bf16`` (``use_bf16=True``),
  ``rerankd-12-bf16`` and ``rerankd-12-defaults`` (``dtype="auto"``).

Timing is run_rerank's: every engine is loaded once and warmed up on the whole input (those warm-up scores are
the ones compared), then timed ``--runs`` times in interleaved order. rerank-100 on full-size LLMs is slow on
2 shared cores, so ``--docs N`` keeps the first N of its 100 documents. Besides run_rerank's table, the report
states issue 3's goal ratios and, for engines that compute the same score, their agreement (Spearman, max |Δ|).
Appended to benchmarks/results/rerank-100-<model>.md with the exact command.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from benchmarks.models import model_path
from benchmarks.run_rerank import RESULTS, Engine, measure, plot, report, spearman
from benchmarks.workloads import WORKLOADS

Pairs = list[tuple[str, str]]
QWEN_FAMILY = "qwen3-yes-no"

# The Qwen3-Reranker model card's recipe facts (also MODELS.md §5).
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
CARD_MAX_LENGTH = 8192
LAYERWISE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing "
    "a prediction of either 'Yes' or 'No'."
)


# --------------------------------------------------------------------------- rerankd
def rerankd_qwen(path: Path, label: str, prefix_sharing: bool, dtype: str = "float32") -> Engine:
    """rerankd's Qwen3 family (normalize=True: sigmoid(l_yes - l_no), the card's softmax([l_no, l_yes])[1], so
    scores compare directly). ``dtype="auto"`` is what a user gets from ``from_pretrained`` with no dtype: the
    label names the dtype it resolved to (the guard's verdict included)."""
    from rerankd import Reranker

    model = Reranker.from_pretrained(
        str(path), device="cpu", dtype=dtype, family=QWEN_FAMILY, prefix_sharing=prefix_sharing
    )
    return Engine(label.format(dtype=model.info.dtype), lambda pairs: [float(s) for s in model.score(pairs)])


def rerankd_layerwise(path: Path, cutoff: int, dtype: str = "float32") -> Engine:
    from rerankd import Reranker

    model = Reranker.from_pretrained(str(path), device="cpu", dtype=dtype, normalize=False)
    label = f"rerankd {'defaults ' if dtype == 'auto' else ''}{model.info.dtype} (cutoff {cutoff})"
    return Engine(label, lambda pairs: [float(s) for s in model.score(pairs, cutoff_layers=[cutoff])])


# --------------------------------------------------------------------------- peers
def official_qwen3(path: Path, batch_size: int, dtype: torch.dtype = torch.float32) -> Engine:
    """The Qwen3-Reranker model card's transformers recipe (from its documented steps, not its code), in the
    model card's float32 or in bfloat16 (its ``dtype=torch.bfloat16`` variant)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
    yes_id, no_id = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
    body_limit = CARD_MAX_LENGTH - len(prefix) - len(suffix)

    def one_batch(pairs: Pairs) -> list[float]:
        bodies = [f"<Instruct>: {CARD_INSTRUCTION}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
        encoded = tokenizer(
            bodies, padding=False, truncation="longest_first", return_attention_mask=False, max_length=body_limit
        )
        encoded["input_ids"] = [prefix + ids + suffix for ids in encoded["input_ids"]]
        inputs = tokenizer.pad(encoded, padding=True, return_tensors="pt", max_length=CARD_MAX_LENGTH)
        with torch.no_grad():
            last = model(**inputs).logits[:, -1, :]  # full-vocabulary logits at every position, as the card does
        no_yes = torch.stack([last[:, no_id], last[:, yes_id]], dim=1).float()
        return torch.log_softmax(no_yes, dim=1)[:, 1].exp().tolist()

    def score(pairs: Pairs) -> list[float]:
        return [s for start in range(0, len(pairs), batch_size) for s in one_batch(pairs[start : start + batch_size])]

    name = str(dtype).removeprefix("torch.")
    return Engine(f"official Qwen3 recipe {name} (batch {batch_size})", score)


def _flag_model_loader() -> Any:
    """FlagEmbedding's LayerWiseMiniCPMForCausalLM loaded the way that works under transformers 5 (MODELS.md §3),
    as the parity tests load it (tests/llm_minicpm/tiny_minicpm.flag_layerwise)."""
    from tests.llm_minicpm.tiny_minicpm import flag_layerwise as load_flag_layerwise

    class Loader:
        @staticmethod
        def from_pretrained(name: str, **kwargs: Any) -> Any:
            model = load_flag_layerwise(Path(name))
            dtype = kwargs.get("torch_dtype")  # FlagEmbedding asks for bfloat16 with use_bf16=True
            return model.to(dtype) if dtype is not None else model

    return Loader


def flag_layerwise(path: Path, cutoff: int, batch_size: int, bf16: bool = False) -> Engine:
    from FlagEmbedding import LayerWiseFlagLLMReranker
    from FlagEmbedding.inference.reranker.decoder_only import layerwise as flag_module

    with mock.patch.object(flag_module, "LayerWiseMiniCPMForCausalLM", _flag_model_loader()):
        model = LayerWiseFlagLLMReranker(
            str(path), use_fp16=False, use_bf16=bf16, devices=["cpu"], batch_size=batch_size, cutoff_layers=[cutoff]
        )

    def score(pairs: Pairs) -> list[float]:
        raw = model.compute_score([list(p) for p in pairs], cutoff_layers=[cutoff], normalize=False)
        return [float(s) for s in np.asarray(raw, dtype=np.float64).reshape(-1)]

    name = "bfloat16" if bf16 else "float32"
    return Engine(f"FlagEmbedding LayerWise {name} (cutoff {cutoff}, batch {batch_size})", score)


EngineFactory = Callable[[Path, argparse.Namespace], Engine]
ENGINES: dict[str, EngineFactory] = {
    "official": lambda p, a: official_qwen3(p, a.peer_batch or 16),
    "official-bf16": lambda p, a: official_qwen3(p, a.peer_batch or 16, torch.bfloat16),
    "rerankd": lambda p, a: rerankd_qwen(p, "rerankd ({dtype}, prefix sharing)", prefix_sharing=True),
    "rerankd-bf16": lambda p, a: rerankd_qwen(p, "rerankd ({dtype}, prefix sharing)", True, "bfloat16"),
    "rerankd-defaults": lambda p, a: rerankd_qwen(p, "rerankd defaults ({dtype}, prefix sharing)", True, "auto"),
    "rerankd-noshare": lambda p, a: rerankd_qwen(p, "rerankd ({dtype}, no prefix sharing)", prefix_sharing=False),
    "flag-12": lambda p, a: flag_layerwise(p, 12, a.peer_batch or 32),
    "flag-12-bf16": lambda p, a: flag_layerwise(p, 12, a.peer_batch or 32, bf16=True),
    "flag-40": lambda p, a: flag_layerwise(p, 40, a.peer_batch or 32),
    "rerankd-12": lambda p, a: rerankd_layerwise(p, 12),
    "rerankd-12-bf16": lambda p, a: rerankd_layerwise(p, 12, "bfloat16"),
    "rerankd-12-defaults": lambda p, a: rerankd_layerwise(p, 12, "auto"),
    "rerankd-40": lambda p, a: rerankd_layerwise(p, 40),
}
# Engines computing the same score (agreement is checked within a group).
GROUPS = {
    "official": "qwen", "rerankd": "qwen", "rerankd-noshare": "qwen", "official-bf16": "qwen", "rerankd-bf16": "qwen",
    "rerankd-defaults": "qwen", "flag-12": "L12", "rerankd-12": "L12", "flag-12-bf16": "L12",
    "rerankd-12-bf16": "L12", "rerankd-12-defaults": "L12", "flag-40": "L40", "rerankd-40": "L40",
}  # fmt: skip
DEFAULT_ENGINES = {
    "qwen3-0.6b": "official,rerankd,rerankd-noshare",
    "minicpm-layerwise-narrow": "flag-12,rerankd-12,rerankd-40,flag-40",
}
# Issue 3's speed goals as (numerator engine, denominator engine, kind, bound): time ratios or speed-ups.
GOALS = [
    ("rerankd", "official", "speed-up", 2.0),
    ("rerankd-bf16", "official-bf16", "speed-up", None),
    ("rerankd-defaults", "official-bf16", "speed-up", None),
    ("rerankd-12-bf16", "flag-12-bf16", "speed-up", None),
    ("rerankd-12-defaults", "flag-12-bf16", "speed-up", None),
    ("rerankd-noshare", "official", "speed-up", None),
    ("rerankd", "rerankd-noshare", "speed-up", None),
    ("rerankd-12", "rerankd-40", "time ratio", 0.45),
    ("rerankd-12", "flag-12", "speed-up", 1.3),
    ("rerankd-40", "flag-40", "speed-up", None),
    ("flag-12", "flag-40", "time ratio", None),
]


def goal_lines(engines: dict[str, Engine]) -> list[str]:
    """Issue 3's ratios from median times: speed-up = peer time / ours; time ratio = ours / other."""
    lines = []
    for mine, other, kind, bound in GOALS:
        if mine not in engines or other not in engines:
            continue
        a, b = engines[mine], engines[other]
        ta, tb = statistics.median(a.times), statistics.median(b.times)
        value = tb / ta if kind == "speed-up" else ta / tb
        spread = [y / x if kind == "speed-up" else x / y for x, y in zip(a.times, b.times, strict=True)]
        if bound is None:
            verdict = ""
        else:
            met = value >= bound if kind == "speed-up" else value <= bound
            verdict = f" - goal {'>=' if kind == 'speed-up' else '<='} {bound}: {'met' if met else 'NOT met'}"
        lines.append(
            f"- {kind} {a.name} vs {b.name}: **{value:.2f}** (per run {min(spread):.2f}-{max(spread):.2f}){verdict}"
        )
    return lines


def agreement_lines(keys: Sequence[str], engines: dict[str, Engine]) -> list[str]:
    lines, first_of = [], {}
    for key in keys:
        group = GROUPS[key]
        if group not in first_of:
            first_of[group] = key
            continue
        ref, eng = engines[first_of[group]], engines[key]
        delta = float(np.max(np.abs(np.subtract(eng.scores, ref.scores))))
        lines.append(
            f"- {eng.name} vs {ref.name}: Spearman {spearman(eng.scores, ref.scores):.4f}, max |Δscore| {delta:.2e}"
        )
    return lines


def time_lines(engines: Iterable[Engine]) -> list[str]:
    return [f"- {e.name}: {statistics.median(e.times):.2f} s ({min(e.times):.2f}-{max(e.times):.2f})" for e in engines]


def batched_positions(lengths: Sequence[int], batch: int, multiple: int = 1) -> int:
    """Token positions computed when ``lengths`` run in order in batches padded to their longest (to ``multiple``)."""
    total = 0
    for start in range(0, len(lengths), batch):
        rows = lengths[start : start + batch]
        total += len(rows) * -(-max(rows) // multiple) * multiple
    return total


def token_lines(path: Path, model: str, pairs: Pairs, keys: Sequence[str], peer_batch: int | None) -> list[str]:
    """What each side computes per pass, from the token counts of the inputs."""
    if model == "minicpm-layerwise-narrow":
        return layerwise_token_lines(path, pairs, keys, peer_batch or 32)
    if model != "qwen3-0.6b":
        return []
    peer_batch = peer_batch or 16
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prefix = len(tokenizer.encode(CARD_PREFIX, add_special_tokens=False))
    suffix = len(tokenizer.encode(CARD_SUFFIX, add_special_tokens=False))
    head = f"<Instruct>: {CARD_INSTRUCTION}\n<Query>: {pairs[0][0]}\n<Document>:"
    shared = prefix + len(tokenizer.encode(head, add_special_tokens=False))
    lengths = [
        prefix + suffix + len(tokenizer.encode(f"<Instruct>: {CARD_INSTRUCTION}\n<Query>: {q}\n<Document>: {d}"))
        for q, d in pairs
    ]
    real = sum(lengths)
    tails = real - shared * len(lengths)
    padded = batched_positions(lengths, peer_batch)
    return [
        f"- tokens per pair: mean {real / len(lengths):.0f} (min {min(lengths)}, max {max(lengths)}); "
        f"shared query prefix ≈{shared} tokens",
        f"- official recipe computes {padded} token positions per pass ({padded / real:.2f}x the real tokens, "
        f"left padding, input order) and a {tokenizer_vocab(path)}-wide vocabulary projection at each of them",
        f"- rerankd with prefix sharing computes ≈{shared + tails} real tokens per pass "
        f"(prefix once per batch, plus padding of its length-sorted batches)",
    ]


def layerwise_token_lines(path: Path, pairs: Pairs, keys: Sequence[str], peer_batch: int) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    fixed = 1 + 2 * count("\n") + count(LAYERWISE_PROMPT)  # BOS, two separators, the prompt
    lengths = sorted((fixed + count("A: " + q) + count("B: " + d) for q, d in pairs), reverse=True)
    real = sum(lengths)
    lines = [f"- tokens per pair: mean {real / len(lengths):.0f} (min {lengths[-1]}, max {lengths[0]})"]
    if any(key.startswith("flag") for key in keys):
        probe = batched_positions(lengths[:peer_batch], peer_batch, 8)
        lines.append(
            f"- FlagEmbedding (length-sorted batches of {peer_batch}, padded to 8) computes "
            f"{batched_positions(lengths, peer_batch, 8)} token positions per pass plus {probe} for its batch-size "
            f"probe (its first batch run once more on every call): {probe / real:.0%} extra"
        )
    return lines


def tokenizer_vocab(path: Path) -> int:
    import json

    return int(json.loads((path / "config.json").read_text())["vocab_size"])


def cpu_line() -> str:
    from rerankd.hardware import cpu_flags

    flags = cpu_flags()
    native = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni") if f in flags]
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown")
    return f"{model}, {torch.get_num_threads()} threads, {', '.join(native) or 'no native bf16/VNNI'}"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen3-0.6b", choices=sorted(DEFAULT_ENGINES))
    parser.add_argument("--workload", default="rerank-100", choices=["rerank-100"])
    parser.add_argument("--engines", default=None, help=f"comma list from {sorted(ENGINES)} (default per model)")
    parser.add_argument("--docs", type=int, default=None, help="use the first N documents (default: all)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--peer-batch",
        type=int,
        default=None,
        help="pairs per forward pass of the peers (default: official 16, flag 32)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to results/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_path(args.model)
    pairs = WORKLOADS[args.workload]().pairs[: args.docs]
    keys = (args.engines or DEFAULT_ENGINES[args.model]).split(",")
    engines = {key: ENGINES[key](path, args) for key in keys}
    measure(list(engines.values()), pairs, args.runs)

    label = f"{args.workload} (first {len(pairs)} docs)" if len(pairs) < 100 else args.workload
    table = report(list(engines.values()), len(pairs), argparse.Namespace(workload=label, model=args.model))
    table = table.replace("python -m benchmarks.run_rerank", "python -m benchmarks.run_llm", 1)
    extra = [
        "",
        f"dtypes as each engine's name says ('defaults': from_pretrained with no dtype, the resolved dtype shown); "
        f"CPU: {cpu_line()}; {args.runs} timed runs after one warm-up, interleaved.",
        "Seconds per pass (median, min-max):",
        *time_lines(engines.values()),
        "",
        "Issue 3 goals (median times):",
        *goal_lines(engines),
        "",
        "Agreement (warm-up scores):",
        *(agreement_lines(keys, engines) or ["- (no two engines compute the same score)"]),
        *(["", "Work:", *lines] if (lines := token_lines(path, args.model, pairs, keys, args.peer_batch)) else []),
    ]
    text = table + "\n".join(extra) + "\n"
    print(text)
    if args.no_write:
        return
    RESULTS.mkdir(exist_ok=True)
    stem = f"{args.workload}-{args.model}"
    with (RESULTS / f"{stem}.md").open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    plot(list(engines.values()), len(pairs), label + f" / {args.model}", RESULTS / f"{stem}.png")
    print(f"appended to {RESULTS / (stem + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
