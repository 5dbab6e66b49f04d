"""Runs in the transformers-4 venv (tests/families_new/tf4/setup.sh): FlagEmbedding's LightWeightFlagLLMReranker
scores pairs for the bge-gemma2-lightweight parity tests. One JSON request per stdin line, one JSON reply per line:
``{"path", "pairs", "cutoff_layers", "compress_ratio", "compress_layers", "prompt", "max_length", "batch_size"}`` ->
``{"scores": [...], "seconds": float}``. Scores are raw (normalize=False), in input order."""

from __future__ import annotations

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    from FlagEmbedding import LightWeightFlagLLMReranker

    models: dict[tuple[str, int], object] = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = (request["path"], int(request.get("max_length", 512)))
        if key not in models:
            models[key] = LightWeightFlagLLMReranker(
                request["path"], use_fp16=False, devices=["cpu"], max_length=key[1], batch_size=128
            )
        reranker = models[key]
        started = time.perf_counter()
        scores = reranker.compute_score(  # type: ignore[attr-defined]
            [tuple(pair) for pair in request["pairs"]],
            cutoff_layers=request.get("cutoff_layers"),
            compress_ratio=request.get("compress_ratio", 1),
            compress_layers=request.get("compress_layers", [8]),
            prompt=request.get("prompt"),
            batch_size=request.get("batch_size", 128),
            normalize=False,
        )
        if scores and isinstance(scores[0], list):  # several cutoff layers: one list per layer
            scores = [list(row) for row in zip(*scores, strict=True)]
        reply = {"scores": scores, "seconds": time.perf_counter() - started}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
