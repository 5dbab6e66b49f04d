"""A peer engine in its own venv, driven over stdin/stdout by benchmarks/run_rerank.py.

Run with the peers venv's python (benchmarks/peers/setup.sh makes it):

    benchmarks/.venvs/peers/bin/python benchmarks/peers/worker.py ENGINE MODEL_DIR THREADS

ENGINE is one of ``infinity`` (Infinity's Python engine, torch backend), ``infinity-optimum`` (Infinity's
ONNX Runtime backend through optimum), ``optimum`` (optimum's ``ORTModelForSequenceClassification`` with the
model card's batch-of-32 loop), or ``optimum-int8`` / ``infinity-optimum-int8``: the same two on the graph
quantised by optimum's own ``ORTQuantizer`` (dynamic int8, ``AutoQuantizationConfig.avx2`` defaults; made once
into ``MODEL-onnx-int8``, outside the timed part).

Protocol: one JSON line per request, ``{"query": str, "documents": [str]}``; one JSON line per reply,
``{"scores": [float], "seconds": float}`` (raw logits, input order; ``seconds`` is the time inside this
process, so pipe overhead is not charged to the peer). The first line written is ``{"ready": true,
"load_seconds": float}``. Only the standard library, the peer and numpy are imported here.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

Scorer = Callable[[str, list[str]], list[float]]
BATCH = 32  # every peer's documented default batch size
QUANTIZED = "model_quantized.onnx"  # the file name optimum's ORTQuantizer writes


def infinity_scorer(path: str, engine_name: str) -> Scorer:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    if engine_name == "optimum":
        _relative_onnx_file_names()

    args = EngineArgs(
        model_name_or_path=path,
        engine=engine_name,
        device="cpu",
        dtype="float32",
        batch_size=BATCH,
        model_warmup=False,
        trust_remote_code=False,
    )
    engine = AsyncEmbeddingEngine.from_args(args)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.astart())

    def score(query: str, documents: list[str]) -> list[float]:
        results, _usage = loop.run_until_complete(engine.rerank(query=query, docs=documents, raw_scores=True))
        by_index = {item.index: float(item.relevance_score) for item in results}
        return [by_index[i] for i in range(len(documents))]

    return score


def _relative_onnx_file_names() -> None:
    """Infinity 0.0.78 hands optimum the graph's path including the model folder as ``file_name``; optimum
    2.x wants it relative to the model folder and refuses otherwise. Pass the relative name (which graph is
    found is unchanged)."""
    from pathlib import Path

    from infinity_emb.transformer.crossencoder import optimum as infinity_optimum

    find = infinity_optimum.get_onnx_files

    def relative(**kwargs: object) -> Path:
        found: Path = find(**kwargs)
        folder = Path(str(kwargs["model_name_or_path"]))
        return found.relative_to(folder) if found.is_relative_to(folder) else found

    infinity_optimum.get_onnx_files = relative


def onnx_folder(path: str) -> str:
    """The model's ONNX graph folder, made beforehand by ``rerankd export --onnx MODEL MODEL-onnx`` (benchmarks/
    run_rerank.py does it): the peers load that same graph, since optimum 1.x's exporter does not import under
    torch 2.13 and optimum 2.x breaks Infinity's local-folder loading."""
    from pathlib import Path

    target = Path(path).with_name(Path(path).name + "-onnx")
    if not (target / "model.onnx").is_file():
        raise SystemExit(f"{target}/model.onnx missing: benchmarks/run_rerank.py exports it")
    return str(target)


def quantized_folder(path: str) -> str:
    """The peers' int8 graph: optimum's ``ORTQuantizer`` on the stock fp32 graph with its documented dynamic
    AVX2 recipe (this machine has AVX2 and no VNNI), plus the tokenizer and config files, in MODEL-onnx-int8.
    Infinity's ONNX engine prefers a ``*quantized*`` graph on CPU by itself; optimum loads it by file name."""
    import shutil
    from pathlib import Path

    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    source = Path(onnx_folder(path))
    target = source.with_name(source.name + "-int8")
    if not (target / QUANTIZED).is_file():
        target.mkdir(exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and item.suffix != ".onnx":
                shutil.copy2(item, target / item.name)
        quantizer = ORTQuantizer.from_pretrained(str(source), file_name="model.onnx")
        quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False), save_dir=str(target))
    return str(target)


def optimum_scorer(path: str, int8: bool = False) -> Scorer:
    import numpy as np
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    folder, file_name = (quantized_folder(path), QUANTIZED) if int8 else (onnx_folder(path), "model.onnx")
    model = ORTModelForSequenceClassification.from_pretrained(
        folder, file_name=file_name, provider="CPUExecutionProvider"
    )

    def score(query: str, documents: list[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(documents), BATCH):
            chunk = documents[start : start + BATCH]
            inputs = tokenizer(
                [query] * len(chunk), chunk, padding=True, truncation=True, max_length=512, return_tensors="np"
            )
            logits = model(**inputs).logits
            out.extend(np.asarray(logits, dtype=np.float64)[:, 0].tolist())
        return out

    return score


def main() -> None:
    engine, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    protocol = os.fdopen(os.dup(1), "w")  # replies go here; anything the peer prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    if engine in ("optimum", "optimum-int8"):
        scorer = optimum_scorer(path, int8=engine.endswith("int8"))
    elif engine == "infinity":
        scorer = infinity_scorer(path, "torch")
    elif engine in ("infinity-optimum", "infinity-optimum-int8"):
        folder = quantized_folder(path) if engine.endswith("int8") else onnx_folder(path)
        scorer = infinity_scorer(folder, "optimum")
    else:
        raise SystemExit(f"unknown peer engine {engine!r}")
    protocol.write(json.dumps({"ready": True, "load_seconds": time.perf_counter() - started}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        scores = scorer(request["query"], request["documents"])
        protocol.write(json.dumps({"scores": scores, "seconds": time.perf_counter() - start}) + "\n")
        protocol.flush()
    os._exit(0)  # Infinity's background threads would otherwise keep the process alive


if __name__ == "__main__":
    main()
