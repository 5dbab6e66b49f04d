"""Runs in the PyLate venv (tests/families_new/pylate/setup.sh): ``pylate.models.ColBERT`` encodes,
``pylate.rank.rerank`` scores. One JSON request per stdin line:
``{"path", "groups": [[query, [documents...]], ...], "batch_size"}`` ->
``{"scores": [[...], ...], "seconds": float}`` (per group, documents in input order)."""

from __future__ import annotations

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    from pylate import models, rank

    loaded: dict[str, object] = {}
    for line in sys.stdin:
        request = json.loads(line)
        path = request["path"]
        if path not in loaded:
            loaded[path] = models.ColBERT(model_name_or_path=path, device="cpu")
        model = loaded[path]
        batch = int(request.get("batch_size", 32))
        groups = request["groups"]
        started = time.perf_counter()
        queries = model.encode([q for q, _ in groups], is_query=True, batch_size=batch)  # type: ignore[attr-defined]
        documents = [model.encode(docs, is_query=False, batch_size=batch) for _, docs in groups]  # type: ignore[attr-defined]
        ids = [list(range(len(docs))) for _, docs in groups]
        ranked = rank.rerank(documents_ids=ids, queries_embeddings=queries, documents_embeddings=documents)
        seconds = time.perf_counter() - started
        scores = []
        for (_, docs), results in zip(groups, ranked, strict=True):
            row = [0.0] * len(docs)
            for result in results:
                row[int(result["id"])] = float(result["score"])
            scores.append(row)
        sys.stdout.write(json.dumps({"scores": scores, "seconds": seconds}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
