"""The ``mxbai-rerank`` package's own scoring (``MxbaiRerankV2.predict``) on a tiny model.

mxbai-rerank 0.1.6 joins query and document with ``tokenizer.prepare_for_model``, which transformers 5 removed; the
oracle supplies FlagEmbedding's id-level replacement (``prepare_for_model_compat``, the same one the project's
FlagEmbedding oracles run through), which for ``add_special_tokens=False`` is transformers 4's ``only_second``
truncation and concatenation, without a text round trip. Nothing else of the package is changed."""

from __future__ import annotations

import functools
import types
from pathlib import Path
from typing import Any

import numpy as np


def mxbai_reference(path: Path) -> Any:
    import torch
    from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat
    from mxbai_rerank import MxbaiRerankV2

    reference = MxbaiRerankV2(str(path), device="cpu", torch_dtype=torch.float32)
    tokenizer = reference.tokenizer
    if not callable(getattr(tokenizer, "prepare_for_model", None)):
        ids_only = types.SimpleNamespace(
            truncation_side=tokenizer.truncation_side, model_input_names=tokenizer.model_input_names
        )
        tokenizer.prepare_for_model = functools.partial(prepare_for_model_compat, ids_only)
    return reference


def mxbai_scores(reference: Any, pairs: list[tuple[str, str]], instruction: str | None = None) -> np.ndarray:
    """Raw scores (``l("1") - l("0")``), one ``predict`` call per query as the package's ``rank`` does."""
    out = np.zeros(len(pairs))
    for query in dict.fromkeys(q for q, _ in pairs):
        rows = [i for i, (q, _) in enumerate(pairs) if q == query]
        scores = reference.predict([query] * len(rows), [pairs[i][1] for i in rows], instruction=instruction)
        out[rows] = scores.numpy()
    return out
