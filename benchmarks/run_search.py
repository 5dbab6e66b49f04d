"""search-100k: the retrieve-then-rerank pipeline on a synthetic 100k-passage corpus.

    python -m benchmarks.run_search --docs 100000 --queries 200 --e2e-queries 8

Measures, in one run on the same corpus and queries:
- index build rate (docs/s): rerankd's embedded index (tantivy BM25) vs bm25s alone (tokenize + index);
- first stage p50/p99 at k=100: rerankd's BM25Retriever (documents fetched) vs bm25s (ids only);
- end to end, k=100 -> minilm-ce: ``POST /v1/search`` on a real ``rerankd serve --index`` (p50, and the first stage's
  share of it) vs the obvious way (bm25s top 100 + sentence-transformers CrossEncoder.predict).
Appends a markdown table to benchmarks/results/search-100k.md with the command, CPU and torch threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.models import model_path
from rerankd.bench.workloads import passage

RESULTS = Path(__file__).parent / "results" / "search-100k.md"
K = 100


def corpus(n: int, seed: int = 11) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"p{i}", passage(rng, rng.randint(30, 90))) for i in range(n)]


def queries(docs: list[tuple[str, str]], n: int, seed: int = 12) -> list[str]:
    """Each query: 3-6 words of a random passage (so every query has term matches)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice(docs)[1].replace(".", "").split()
        out.append(" ".join(rng.sample(words, k=min(len(words), rng.randint(3, 6)))))
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def build_rerankd(docs: list[tuple[str, str]], folder: Path) -> float:
    from rerankd.pipeline import Document, IndexConfig, IndexWriter

    start = time.perf_counter()
    with IndexWriter(folder, IndexConfig(language="english")) as writer:
        writer.upsert(Document(doc_id, text) for doc_id, text in docs)
    return len(docs) / (time.perf_counter() - start)


def build_bm25s(docs: list[tuple[str, str]]) -> tuple[float, object, object]:
    import bm25s
    from bm25s.tokenization import Tokenizer

    start = time.perf_counter()
    tokenizer = Tokenizer(stopwords="en")
    ids = tokenizer.tokenize([text for _, text in docs], update_vocab=True, show_progress=False, return_as="ids")
    retriever = bm25s.BM25()
    retriever.index(ids, show_progress=False)
    return len(docs) / (time.perf_counter() - start), retriever, tokenizer


def first_stage_rerankd(folder: Path, texts: list[str]) -> list[float]:
    from rerankd.pipeline import BM25Retriever

    retriever = BM25Retriever(folder)
    retriever.retrieve(texts[0], K)
    times = []
    for query in texts:
        tick = time.perf_counter()
        retriever.retrieve(query, K)
        times.append((time.perf_counter() - tick) * 1000)
    return times


def bm25s_top(retriever: object, tokenizer: object, query: str) -> np.ndarray:
    tokens = tokenizer.tokenize([query], update_vocab=False, show_progress=False, return_as="ids")  # type: ignore[attr-defined]
    indices, _ = retriever.retrieve(tokens, k=K, show_progress=False)  # type: ignore[attr-defined]
    return indices[0]


def first_stage_bm25s(retriever: object, tokenizer: object, texts: list[str]) -> list[float]:
    bm25s_top(retriever, tokenizer, texts[0])
    times = []
    for query in texts:
        tick = time.perf_counter()
        bm25s_top(retriever, tokenizer, query)
        times.append((time.perf_counter() - tick) * 1000)
    return times


def start_server(folder: Path, model: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    exe = str(Path(sys.executable).with_name("rerankd"))
    command = [exe, "serve", "--model", f"minilm-ce={model}", "--index", str(folder), "--port", str(port),
               "--cache", "none", "--device", "cpu", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if time.time() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("rerankd serve did not become ready")
        time.sleep(0.5)


def end_to_end(
    folder: Path,
    bm25s_index: tuple[object, object],
    docs: list[tuple[str, str]],
    model: Path,
    texts: list[str],
    port: int,
) -> tuple[list[float], list[float], list[float]]:
    """Interleaved per query (the machine is shared: both see the same load): POST /v1/search wall ms, the
    server's own retrieve_ms, and the obvious way's ms (bm25s top 100 + sentence-transformers CrossEncoder)."""
    from sentence_transformers import CrossEncoder

    retriever, tokenizer = bm25s_index
    encoder = CrossEncoder(str(model), device="cpu")
    process, url = start_server(folder, model, port)
    walls, retrieves, obvious = [], [], []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for i, query in enumerate([texts[0], *texts]):  # the first query warms both up
                tick = time.perf_counter()
                response = client.post("/v1/search", json={"query": query, "k": K, "top_n": 10})
                response.raise_for_status()
                wall = (time.perf_counter() - tick) * 1000
                tick = time.perf_counter()
                top = bm25s_top(retriever, tokenizer, query)
                pairs = [(query, docs[int(j)][1]) for j in top]
                scores = encoder.predict(pairs, batch_size=32, show_progress_bar=False)
                np.argsort(-scores)[:10]
                if i:
                    obvious.append((time.perf_counter() - tick) * 1000)
                    walls.append(wall)
                    retrieves.append(response.json()["timings"]["retrieve_ms"])
    finally:
        process.terminate()
        process.wait(timeout=60)
    return walls, retrieves, obvious


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--e2e-queries", type=int, default=8)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    import torch

    docs = corpus(args.docs)
    texts = queries(docs, args.queries)
    model = model_path("minilm-ce")
    with tempfile.TemporaryDirectory(prefix="rerankd-search-bench-") as tmp:
        folder = Path(tmp) / "index"
        rate_rerankd = build_rerankd(docs, folder)
        rate_bm25s, retriever, tokenizer = build_bm25s(docs)
        fs_rerankd = first_stage_rerankd(folder, texts)
        fs_bm25s = first_stage_bm25s(retriever, tokenizer, texts)
        e2e, retrieve_ms, obvious = end_to_end(
            folder, (retriever, tokenizer), docs, model, texts[: args.e2e_queries], args.port
        )
    share = statistics.median(retrieve_ms) / statistics.median(e2e) * 100
    rows = [
        ("index build (docs/s)", f"{rate_rerankd:,.0f}", f"{rate_bm25s:,.0f} (bm25s)", "-"),
        ("first stage k=100, p50 ms", f"{percentile(fs_rerankd, 50):.2f}", f"{percentile(fs_bm25s, 50):.2f} (bm25s)",
         "rerankd fetches the 100 documents; bm25s returns ids"),
        ("first stage k=100, p99 ms", f"{percentile(fs_rerankd, 99):.2f}", f"{percentile(fs_bm25s, 99):.2f} (bm25s)",
         ""),
        ("end to end k=100 -> minilm-ce, p50 ms", f"{statistics.median(e2e):.0f} (POST /v1/search)",
         f"{statistics.median(obvious):.0f} (bm25s + sentence-transformers CrossEncoder)",
         f"first stage = {share:.2f}% of the request (server's retrieve_ms p50 {statistics.median(retrieve_ms):.1f})"),
    ]  # fmt: skip
    command = " ".join(["python -m benchmarks.run_search", *sys.argv[1:]])
    lines = [
        f"### search-100k - {time.strftime('%Y-%m-%d %H:%M')} - {args.docs:,} passages - torch threads "
        f"{torch.get_num_threads()}",
        "",
        f"`{command}` on {cpu_name()} ({os.cpu_count()} cores, shared with other work while it ran)",
        "",
        "| measure | rerankd | peer | note |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
