"""OpenVINO and CTranslate2 peers, and the CPU facts that pick each peer's best configuration.

Imported by benchmarks/peers/worker.py inside the peers venv (never by rerankd's venv). Every engine either
returns a scorer and a one-line description of what runs (precision, quantisation recipe), or raises
``Unavailable`` with the reason (package missing, model type unsupported, precision not offered by this CPU);
the worker turns that into a skip, never a crash.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

Scorer = Callable[[str, list[str]], list[float]]
BATCH = 32  # every peer's documented default batch size


class Unavailable(Exception):
    """This engine cannot run here; the message says why."""


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def best_ort_quantization() -> str:
    """The ``AutoQuantizationConfig`` constructor optimum documents for this CPU: avx512_vnni > avx512 > avx2."""
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def _copy_side_files(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix in (".json", ".txt", ".model") and not (target / item.name).exists():
            shutil.copy2(item, target / item.name)


def _batches(tokenizer: object, query: str, documents: list[str], tensors: str) -> list[dict[str, object]]:
    out = []
    for start in range(0, len(documents), BATCH):
        chunk = documents[start : start + BATCH]
        out.append(
            tokenizer(  # type: ignore[operator]
                [query] * len(chunk), chunk, padding=True, truncation=True, max_length=512, return_tensors=tensors
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- OpenVINO
OV_PRECISIONS = {"defaults": None, "fp32": "f32", "bf16": "bf16", "int8": None}


def openvino_scorer(path: str, mode: str, threads: int, calibration: str | None) -> tuple[Scorer, str]:
    """optimum-intel's ``OVModelForSequenceClassification`` (its own export of the PyTorch model, made once into
    MODEL-openvino/), batch-of-32 loop. ``mode``: defaults (the CPU plugin picks the inference precision), fp32,
    bf16 (``INFERENCE_PRECISION_HINT``; only where the CPU has native bf16), int8 (NNCF post-training static
    quantisation of the exported graph, ``ModelType.TRANSFORMER``, calibrated on pairs that are not the timed
    workload, made once into MODEL-openvino-int8/; the rest runs at the plugin's default precision)."""
    try:
        import numpy as np
        import openvino as ov
        from optimum.intel import OVModelForSequenceClassification
        from transformers import AutoTokenizer
    except ImportError as error:
        raise Unavailable(f"openvino / optimum-intel not installed in the peers venv: {error}") from error
    if mode == "bf16" and not native_bf16():
        raise Unavailable("OpenVINO bf16 needs a CPU with native bf16 (avx512_bf16 or amx_bf16); this one has none")
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") and mode == "bf16":
        raise Unavailable("OpenVINO's CPU plugin does not list BF16 among its capabilities here")

    source = Path(path)
    fp32_dir = source.with_name(source.name + "-openvino")
    if not (fp32_dir / "openvino_model.xml").is_file():
        exported = OVModelForSequenceClassification.from_pretrained(path, export=True, compile=False)
        exported.save_pretrained(fp32_dir)
        _copy_side_files(source, fp32_dir)
    folder = fp32_dir
    tokenizer = AutoTokenizer.from_pretrained(path)
    if mode == "int8":
        folder = fp32_dir.with_name(fp32_dir.name + "-int8")
        if not (folder / "openvino_model.xml").is_file():
            _quantize_openvino(fp32_dir, folder, tokenizer, calibration)

    config: dict[str, str] = {"INFERENCE_NUM_THREADS": str(threads)}
    if OV_PRECISIONS[mode] is not None:
        config["INFERENCE_PRECISION_HINT"] = str(OV_PRECISIONS[mode])
    model = OVModelForSequenceClassification.from_pretrained(str(folder), ov_config=config)
    hint = model.request.get_property("INFERENCE_PRECISION_HINT")  # what the plugin actually runs
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    detail = f"openvino {ov.__version__.split('-')[0]}, inference precision {precision}" + (
        ", int8 static (NNCF)" if mode == "int8" else ""
    )

    def score(query: str, documents: list[str]) -> list[float]:
        out: list[float] = []
        for inputs in _batches(tokenizer, query, documents, "pt"):
            logits = model(**inputs).logits
            out.extend(np.asarray(logits, dtype=np.float64)[:, 0].tolist())
        return out

    return score, detail


def _quantize_openvino(source: Path, target: Path, tokenizer: object, calibration: str | None) -> None:
    try:
        import nncf
        import openvino as ov
    except ImportError as error:
        raise Unavailable(f"nncf not installed in the peers venv: {error}") from error
    if calibration is None:
        raise Unavailable("OpenVINO int8 needs calibration pairs (benchmarks/run_rerank.py writes them)")
    pairs = json.loads(Path(calibration).read_text(encoding="utf-8"))
    core = ov.Core()
    model = core.read_model(str(source / "openvino_model.xml"))
    names = {port.get_any_name() for port in model.inputs}
    samples = []
    for query, document in pairs:
        encoded = tokenizer(query, document, truncation=True, max_length=512, return_tensors="np")  # type: ignore[operator]
        samples.append({name: value for name, value in encoded.items() if name in names})
    quantized = nncf.quantize(
        model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples)
    )
    target.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(target / "openvino_model.xml"))
    _copy_side_files(source, target)


# ---------------------------------------------------------------------------------------------- CTranslate2
CT2_TYPES = {"defaults": "default", "int8": "int8", "bf16": "bfloat16"}


def ctranslate2_scorer(path: str, mode: str, threads: int) -> tuple[Scorer, str]:
    """A ``ctranslate2.Encoder`` on the model converted once by ct2's transformers converter into MODEL-ct2/
    (float32 weights; ``compute_type`` quantises at load). CTranslate2 has no classification head, so the
    model's own head (BERT: classifier on the pooler output; XLM-R: dense-tanh-out_proj on the first token) is
    applied to the encoder's output in numpy, in float32, inside the timed part."""
    try:
        import ctranslate2
        import numpy as np
        from transformers import AutoConfig, AutoTokenizer
    except ImportError as error:
        raise Unavailable(f"ctranslate2 not installed in the peers venv: {error}") from error
    compute_type = CT2_TYPES[mode]
    supported = ctranslate2.get_supported_compute_types("cpu")
    if compute_type != "default" and compute_type not in supported:
        raise Unavailable(
            f"ctranslate2 {ctranslate2.__version__} offers compute types {sorted(supported)} on this CPU, "
            f"not {compute_type}"
        )
    architecture = (AutoConfig.from_pretrained(path).architectures or ["?"])[0]
    if architecture not in ("BertForSequenceClassification", "XLMRobertaForSequenceClassification"):
        raise Unavailable(f"ctranslate2's transformers converter has no encoder loader for {architecture}")

    source = Path(path)
    target = source.with_name(source.name + "-ct2")
    if not (target / "model.bin").is_file():
        ctranslate2.converters.TransformersConverter(path).convert(str(target), force=True)
    head = _classification_head(path, architecture)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = ctranslate2.Encoder(str(target), device="cpu", compute_type=compute_type, intra_threads=threads)
    detail = f"ctranslate2 {ctranslate2.__version__}, compute_type {encoder.compute_type}, head in numpy fp32"

    def score(query: str, documents: list[str]) -> list[float]:
        out: list[float] = []
        for inputs in _batches(tokenizer, query, documents, "np"):
            mask = np.asarray(inputs["attention_mask"])
            ids = [row[: int(m.sum())].tolist() for row, m in zip(np.asarray(inputs["input_ids"]), mask, strict=True)]
            types = None
            if "token_type_ids" in inputs:
                token_types = np.asarray(inputs["token_type_ids"])
                types = [row[: len(i)].tolist() for row, i in zip(token_types, ids, strict=True)]
            result = encoder.forward_batch(ids, token_type_ids=types)
            out.extend(head(result, np).tolist())
        return out

    return score, detail


def _classification_head(path: str, architecture: str) -> Callable[[object, object], object]:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, torch_dtype=torch.float32)
    weights = {name: value.detach().numpy().astype(np.float32) for name, value in model.classifier.state_dict().items()}
    del model
    if architecture == "BertForSequenceClassification":
        w, b = weights["weight"], weights["bias"]
        return lambda result, np_: (np_.asarray(result.pooler_output, dtype=np_.float32) @ w.T + b)[:, 0]  # type: ignore[attr-defined]
    dense_w, dense_b = weights["dense.weight"], weights["dense.bias"]
    out_w, out_b = weights["out_proj.weight"], weights["out_proj.bias"]

    def roberta(result: object, np_: object) -> object:
        first = np.asarray(result.last_hidden_state, dtype=np.float32)[:, 0]  # type: ignore[attr-defined]
        return (np.tanh(first @ dense_w.T + dense_b) @ out_w.T + out_b)[:, 0]

    return roberta
