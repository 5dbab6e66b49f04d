"""A peer engine in its own venv, driven over stdin/stdout by benchmarks/run_rerank.py.

Run with the peers venv's python (benchmarks/peers/setup.sh makes it):

    benchmarks/.venvs/peers/bin/python benchmarks/peers/worker.py ENGINE MODEL_DIR THREADS

ENGINE is one of ``infinity`` (Infinity's Python engine, torch backend), ``infinity-optimum`` (Infinity's
ONNX Runtime backend through optimum), ``optimum`` (optimum's ``ORTModelForSequenceClassification`` with the
model card's batch-of-32 loop), or ``optimum-int8`` / ``infinity-optimum-int8``: the same two on the graph
quantised by optimum's own ``ORTQuantizer`` (dynamic int8 with the ``AutoQuantizationConfig`` recipe for this
CPU: avx512_vnni, else avx512, else avx2; made once into ``MODEL-onnx-int8-<recipe>``, outside the timed part),
``infinity-bf16`` (Infinity's torch engine with ``dtype="bfloat16"``, where the CPU has native bf16), and the
OpenVINO / CTranslate2 engines of cpu_runtimes.py (``openvino``, ``openvino-fp32``, ``openvino-bf16``,
``openvino-int8``, ``ct2``, ``ct2-int8``, ``ct2-bf16``).

Protocol: one JSON line per request, ``{"query": str, "documents": [str]}``; one JSON line per reply,
``{"scores": [float], "seconds": float}`` (raw logits, input order; ``seconds`` is the time inside this
process, so pipe overhead is not charged to the peer). The first line written is ``{"ready": true,
"load_seconds": float, "detail": str}`` (what runs: precision, quantisation recipe), or ``{"skip": reason}`` when
the engine cannot run here (package missing, model type or precision unsupported). Only the standard library,
the peer and numpy are imported here.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from cpu_runtimes import (
    BATCH,
    Scorer,
    Unavailable,
    best_ort_quantization,
    ctranslate2_scorer,
    native_bf16,
    openvino_scorer,
)

QUANTIZED = "model_quantized.onnx"  # the file name optimum's ORTQuantizer writes


def infinity_scorer(path: str, engine_name: str, dtype: str = "float32") -> Scorer:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    if engine_name == "optimum":
        _relative_onnx_file_names()

    args = EngineArgs(
        model_name_or_path=path,
        engine=engine_name,
        device="cpu",
        dtype=dtype,
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
    recipe for this CPU (``AutoQuantizationConfig.avx512_vnni`` where the CPU has VNNI, else ``avx512``, else
    ``avx2``), plus the tokenizer and config files, in MODEL-onnx-int8-<recipe>. Infinity's ONNX engine prefers a
    ``*quantized*`` graph on CPU by itself; optimum loads it by file name."""
    import shutil
    from pathlib import Path

    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    recipe = best_ort_quantization()
    source = Path(onnx_folder(path))
    target = source.with_name(f"{source.name}-int8-{recipe}")
    if not (target / QUANTIZED).is_file():
        target.mkdir(exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and item.suffix != ".onnx":
                shutil.copy2(item, target / item.name)
        quantizer = ORTQuantizer.from_pretrained(str(source), file_name="model.onnx")
        config = getattr(AutoQuantizationConfig, recipe)(is_static=False)
        quantizer.quantize(config, save_dir=str(target))
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


def load(engine: str, path: str, threads: int, calibration: str | None) -> tuple[Scorer, str]:
    """The engine's scorer and what it runs (precision / recipe), or ``Unavailable`` with the reason."""
    mode = engine.split("-", 1)[1] if "-" in engine else "defaults"
    if engine.startswith("openvino"):
        return openvino_scorer(path, mode, threads, calibration)
    if engine.startswith("ct2"):
        return ctranslate2_scorer(path, mode, threads)
    int8 = f"int8 dynamic, AutoQuantizationConfig.{best_ort_quantization()}(is_static=False)"
    if engine in ("optimum", "optimum-int8"):
        return optimum_scorer(path, int8=engine.endswith("int8")), int8 if engine.endswith("int8") else "fp32"
    if engine == "infinity":
        return infinity_scorer(path, "torch"), "torch fp32"
    if engine == "infinity-bf16":
        if not native_bf16():
            raise Unavailable("Infinity bf16 is only run where the CPU has native bf16 (avx512_bf16 or amx_bf16)")
        return infinity_scorer(path, "torch", dtype="bfloat16"), "torch bf16"
    if engine in ("infinity-optimum", "infinity-optimum-int8"):
        folder = quantized_folder(path) if engine.endswith("int8") else onnx_folder(path)
        return infinity_scorer(folder, "optimum"), int8 if engine.endswith("int8") else "onnx fp32"
    raise SystemExit(f"unknown peer engine {engine!r}")


def main() -> None:
    engine, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    protocol = os.fdopen(os.dup(1), "w")  # replies go here; anything the peer prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    calibration = sys.argv[4] if len(sys.argv) > 4 else None
    try:
        scorer, detail = load(engine, path, threads, calibration)
    except Unavailable as reason:
        protocol.write(json.dumps({"skip": str(reason)}) + "\n")
        protocol.flush()
        os._exit(0)
    reply = {"ready": True, "load_seconds": time.perf_counter() - started, "detail": detail}
    protocol.write(json.dumps(reply) + "\n")
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
