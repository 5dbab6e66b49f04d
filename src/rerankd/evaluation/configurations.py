"""Run the same inputs through two configurations of a model and compare the outputs (``rerankd compare``).

A :class:`Configuration` is what :meth:`rerankd.Reranker.from_pretrained` accepts (device, dtype, batch
token budget, max length, ...) plus the per-call options of :meth:`~rerankd.Reranker.score` (instruction,
cutoff layers). Configurations that load identically share one loaded model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rerankd.errors import InvalidInput
from rerankd.evaluation.datasets import QueryDocumentPair
from rerankd.evaluation.precision import PrecisionReport, Thresholds, compare_outputs
from rerankd.evaluation.progress import StageProgress, stage_counter
from rerankd.settings import device_choice, dtype_choice, layers_choice, quantize_choice, weights_choice

if TYPE_CHECKING:
    from rerankd.reranker import Reranker

logger = logging.getLogger(__name__)


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _one_of(*choices: str | None) -> Callable[[str], Any]:
    """A converter accepting only ``choices`` (``None`` written as none/off/empty), so a typo fails before loading."""

    def convert(text: str) -> str | None:
        value = quantize_choice(text) if None in choices else text.strip()
        if value not in choices:
            raise ValueError(f"choose {' or '.join(str(c).lower() for c in choices)}")
        return value

    return convert


LOAD_KEYS: dict[str, Callable[[str], Any]] = {
    "model": str,
    "device": device_choice,
    "dtype": dtype_choice,
    "family": str,
    "max_length": int,
    "query_max_length": int,
    "truncation": _one_of("flag", "longest_first"),
    "pooling": str,
    "query_instruction": str,
    "normalize": _to_bool,
    "truncate": _to_bool,
    "batch_tokens": int,
    "max_batch_size": int,
    "trust_remote_code": _to_bool,
    "source": str,
    "revision": str,
    "backend": _one_of("torch", "onnx"),
    "quantize": _one_of("int8", None),
    "dtype_guard": _to_bool,
    "prefix_sharing": _to_bool,
    "compress_ratio": int,  # bge-gemma2-lightweight token compression
    "compress_layers": layers_choice,
    "score_weights": weights_choice,  # bge-m3: dense+sparse+multi-vector weights, e.g. 0.4+0.2+0.4
}
CALL_KEYS: dict[str, Callable[[str], Any]] = {"instruction": str, "cutoff_layers": layers_choice}


@dataclass(frozen=True)
class Configuration:
    """``load``: keyword arguments of ``Reranker.from_pretrained`` (``model`` included); ``call``: of ``score``."""

    label: str
    load: dict[str, Any]
    call: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        settings = {**self.load, **self.call}
        return ", ".join(f"{key}={value}" for key, value in settings.items() if value is not None)


def parse_configuration(label: str, base: Mapping[str, Any], assignments: Sequence[str]) -> Configuration:
    """``base`` load options with ``KEY=VALUE`` assignments applied (e.g. ``dtype=bfloat16``,
    ``batch_tokens=512``, ``cutoff_layers=8,12``)."""
    load = dict(base)
    call: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise InvalidInput(f"configuration {label}: {assignment!r} is not KEY=VALUE", param=label)
        converter = LOAD_KEYS.get(key) or CALL_KEYS.get(key)
        if converter is None:
            known = ", ".join(sorted([*LOAD_KEYS, *CALL_KEYS]))
            raise InvalidInput(f"configuration {label}: unknown key {key!r}; known keys: {known}", param=label)
        try:
            value = converter(text.strip())
        except ValueError as exc:
            raise InvalidInput(f"configuration {label}: {key}={text!r}: {exc}", param=label) from exc
        (call if key in CALL_KEYS else load)[key] = value
    if not load.get("model"):
        raise InvalidInput(f"configuration {label} names no model", param=label)
    return Configuration(label, load, call)


def group_by_query(pairs: Sequence[QueryDocumentPair]) -> dict[str, list[int]]:
    """Pair positions per query, queries in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for position, pair in enumerate(pairs):
        groups.setdefault(pair.query, []).append(position)
    return groups


def score_pairs(
    reranker: Reranker,
    pairs: Sequence[QueryDocumentPair],
    call: Mapping[str, Any],
    progress: StageProgress | None = None,
    stage: str = "score",
) -> list[float]:
    """One score per pair (the deepest layer's when several cutoff layers are asked for)."""
    advance = stage_counter(progress, stage, len(pairs))
    return reranker.score([(p.query, p.document) for p in pairs], progress=advance, **call)


def scores_report(
    pairs: Sequence[QueryDocumentPair],
    scores: tuple[Sequence[float], Sequence[float]],
    *,
    labels: tuple[str, str] = ("A", "B"),
    seconds: tuple[float | None, float | None] = (None, None),
    thresholds: Thresholds | None = None,
    top_k: int = 3,
) -> PrecisionReport:
    """Compare B's scores of ``pairs`` with reference A's, one input per query."""
    scores_a, scores_b = np.asarray(scores[0], dtype=np.float64), np.asarray(scores[1], dtype=np.float64)
    groups = group_by_query(pairs)
    return compare_outputs(
        [scores_a[positions] for positions in groups.values()],
        [scores_b[positions] for positions in groups.values()],
        list(groups),
        kind="scores",
        thresholds=thresholds,
        top_k=top_k,
        label_a=labels[0],
        label_b=labels[1],
        seconds=seconds,
    )


def pair_texts(pairs: Sequence[QueryDocumentPair]) -> list[str]:
    """Every distinct query and document text, in order of first appearance."""
    return list(dict.fromkeys(text for pair in pairs for text in (pair.query, pair.document)))


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def compare_rerankers(
    reranker_a: Reranker,
    reranker_b: Reranker,
    pairs: Sequence[QueryDocumentPair],
    *,
    call_a: Mapping[str, Any] | None = None,
    call_b: Mapping[str, Any] | None = None,
    labels: tuple[str, str] = ("A", "B"),
    thresholds: Thresholds | None = None,
    top_k: int = 3,
    progress: StageProgress | None = None,
) -> PrecisionReport:
    """Score ``pairs`` with two loaded rerankers and compare B's scores with reference A's, query by query."""
    if not pairs:
        raise InvalidInput("no pairs to compare")
    scores_a, seconds_a = _timed(lambda: score_pairs(reranker_a, pairs, call_a or {}, progress, f"score {labels[0]}"))
    scores_b, seconds_b = _timed(lambda: score_pairs(reranker_b, pairs, call_b or {}, progress, f"score {labels[1]}"))
    return scores_report(
        pairs, (scores_a, scores_b), labels=labels, seconds=(seconds_a, seconds_b), thresholds=thresholds, top_k=top_k
    )


def embeddings_report(
    texts: Sequence[str],
    vectors: tuple[np.ndarray, np.ndarray],
    *,
    labels: tuple[str, str] = ("A", "B"),
    seconds: tuple[float | None, float | None] = (None, None),
    thresholds: Thresholds | None = None,
) -> PrecisionReport:
    """Compare B's embeddings with reference A's, one input per text (as hidden-state precision reports do)."""
    return compare_outputs(
        list(vectors[0]),
        list(vectors[1]),
        list(texts),
        kind="embeddings",
        thresholds=thresholds,
        label_a=labels[0],
        label_b=labels[1],
        seconds=seconds,
    )


def compare_embeddings(
    encoder_a: Reranker,
    encoder_b: Reranker,
    texts: Sequence[str],
    *,
    labels: tuple[str, str] = ("A", "B"),
    thresholds: Thresholds | None = None,
) -> PrecisionReport:
    """Embed ``texts`` with two loaded bi-encoders and compare B's embeddings with reference A's, text by text."""
    unique = list(dict.fromkeys(texts))
    vectors_a, seconds_a = _timed(lambda: encoder_a.embed(unique))
    vectors_b, seconds_b = _timed(lambda: encoder_b.embed(unique))
    return embeddings_report(
        unique, (vectors_a, vectors_b), labels=labels, seconds=(seconds_a, seconds_b), thresholds=thresholds
    )


def load_configuration(configuration: Configuration, progress: StageProgress | None = None) -> Reranker:
    from rerankd.reranker import Reranker

    stage = f"load {configuration.label}: {configuration.load['model']}"
    if progress:
        progress(stage, 0, 1)
    options = {key: value for key, value in configuration.load.items() if key != "model" and value is not None}
    reranker = Reranker.from_pretrained(configuration.load["model"], **options)
    if progress:
        progress(stage, 1, 1)
    return reranker


def _run_configuration(
    reranker: Reranker,
    configuration: Configuration,
    pairs: Sequence[QueryDocumentPair],
    texts: Sequence[str],
    embeddings: bool,
    progress: StageProgress | None,
) -> tuple[Any, float]:
    """(embeddings of ``texts`` or scores of ``pairs``, seconds taken)."""
    if embeddings:
        output, elapsed = _timed(lambda: reranker.embed(texts))
    else:
        stage = f"score {configuration.label}"
        output, elapsed = _timed(lambda: score_pairs(reranker, pairs, configuration.call, progress, stage))
    logger.info("configuration %s (%s) took %.2fs", configuration.label, configuration.describe(), elapsed)
    return output, elapsed


def compare_configurations(
    configuration_a: Configuration,
    configuration_b: Configuration,
    pairs: Sequence[QueryDocumentPair],
    *,
    embeddings: bool = False,
    thresholds: Thresholds | None = None,
    top_k: int = 3,
    progress: StageProgress | None = None,
) -> PrecisionReport:
    """Compare two configurations' scores of ``pairs`` (or, with ``embeddings=True``, their embeddings of every
    query and document text). Configurations run one after the other, so only one model is loaded at a time;
    two that load identically share one load."""
    if not pairs:
        raise InvalidInput("no pairs to compare")
    texts = pair_texts(pairs)
    outputs: list[Any] = []
    seconds: list[float] = []
    reranker: Reranker | None = None
    for configuration in (configuration_a, configuration_b):
        if reranker is None or configuration.load != configuration_a.load:
            reranker = None  # release the previous model before loading the next
            reranker = load_configuration(configuration, progress)
        output, elapsed = _run_configuration(reranker, configuration, pairs, texts, embeddings, progress)
        outputs.append(output)
        seconds.append(elapsed)
    labels = (configuration_a.label, configuration_b.label)
    if embeddings:
        return embeddings_report(
            texts, (outputs[0], outputs[1]), labels=labels, seconds=(seconds[0], seconds[1]), thresholds=thresholds
        )
    return scores_report(
        pairs,
        (outputs[0], outputs[1]),
        labels=labels,
        seconds=(seconds[0], seconds[1]),
        thresholds=thresholds,
        top_k=top_k,
    )
