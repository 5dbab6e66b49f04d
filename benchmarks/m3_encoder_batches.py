"""Where bge-m3 scoring time goes: the bare XLM-R encoder on rerank-100's documents (m3-small, fp32, CPU) in
FlagEmbedding's shape (one batch padded to the longest document) vs rerankd's plan (length-sorted batches within
the CPU token budget), with and without rerankd's one query pass per batch. Interleaved, printed only.

    python -m benchmarks.m3_encoder_batches --runs 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from benchmarks.run_families import FAMILIES, _folder
from benchmarks.workloads import WORKLOADS
from rerankd import Reranker
from rerankd.families.base import Encoded, collate
from rerankd.runtime.planner import plan_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pairs = WORKLOADS["rerank-100"]().pairs[:100]
    model = Reranker.from_pretrained(str(_folder("m3-small", FAMILIES["m3"][1])), device="cpu", dtype="float32")
    family = model.family
    query = family.encode_texts([pairs[0][0]], "query")[0].input_ids  # type: ignore[attr-defined]
    docs = [e.input_ids for e in family.encode_texts([d for _, d in pairs], "document")]  # type: ignore[attr-defined]

    def run(rows: Sequence[tuple[int, ...]]) -> None:
        batch = [Encoded(input_ids=row) for row in rows]
        inputs = collate(batch, pad_id=family.pad_id, pad_side="right", device=family.device)  # type: ignore[attr-defined]
        with torch.inference_mode():
            family.network.model(**inputs)  # type: ignore[attr-defined]

    plan = plan_batches([len(query) + len(d) for d in docs], model.budget, None)
    print("rerankd batches (documents each):", [len(b) for b in plan])
    cases: dict[str, Callable[[], object]] = {
        "one padded batch (FlagEmbedding's shape)": lambda: run(docs),
        "sorted token-budget batches": lambda: [run([docs[i] for i in b]) for b in plan],
        "sorted batches + a query pass each": lambda: [(run([query]), run([docs[i] for i in b])) for b in plan],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case()
    for r in range(args.runs):
        for name, case in list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]:
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.2f} s, runs {[round(v, 2) for v in values]}")


if __name__ == "__main__":
    main()
