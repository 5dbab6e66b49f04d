"""Drives a running rerankd container with the real client SDKs (run by deploy/test-image.sh, on the host, with the
project's virtual environment). Every answer is checked against the same models computed here on the host.

    python deploy/image/drive.py --url http://127.0.0.1:PORT --api-key KEY --tiny deploy/.build/models/tiny

The container serves ``tiny`` (the tiny cross-encoder baked into the image), ``tiny-mounted`` (the same folder
mounted read-only) and ``minilm`` (the packaged all-MiniLM-L6-v2 bi-encoder). Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np

QUERY = "what is the giant panda bear of china?"
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello world"]
SCORE_TOLERANCE = 1e-5


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAIL: {message}")


def cohere_v2(url: str, key: str, model: str, want: dict[int, float]) -> str:
    import cohere

    client = cohere.ClientV2(api_key=key, base_url=url)
    response = client.rerank(model=model, query=QUERY, documents=DOCS, top_n=len(DOCS))
    order = sorted(want, key=lambda i: -want[i])
    check([r.index for r in response.results] == order, f"{model}: order {response.results} != {order}")
    worst = max(abs(r.relevance_score - want[r.index]) for r in response.results)
    check(worst < SCORE_TOLERANCE, f"{model}: scores differ from the host's by {worst:.2e}")
    return f"cohere v2 rerank {model}: order {order}, top score {want[order[0]]:.6f}, max |diff| vs host {worst:.1e}"


def openai_embeddings(url: str, key: str, want: np.ndarray) -> str:
    import openai

    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1")
    response = client.embeddings.create(model="minilm", input=DOCS)
    got = np.array([item.embedding for item in response.data])
    check(got.shape == want.shape, f"embeddings shape {got.shape} != {want.shape}")
    worst = float(np.abs(got - want).max())
    check(worst < SCORE_TOLERANCE, f"embeddings differ from the host's by {worst:.2e}")
    return f"openai embeddings minilm: {got.shape[0]} x {got.shape[1]}, max |diff| vs host {worst:.1e}"


def sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def metrics(url: str, v2_calls: int) -> str:
    text = httpx.get(f"{url}/metrics", timeout=10).text  # no key: /metrics is open, like the probes
    answered = sample(text, "rerankd_requests_total", route="/v2/rerank", status="200")
    refused = sample(text, "rerankd_requests_total", status="401")  # refused before routing: any route label
    check(answered == v2_calls, f"/metrics counts {answered} answered /v2/rerank calls, {v2_calls} were made")
    check(refused == 1, f"/metrics counts {refused} requests refused with 401, 1 was made")
    pairs = sample(text, "rerankd_scored_pairs_total", model="tiny")
    check(pairs >= len(DOCS), f"/metrics counts {pairs} pairs scored by tiny")
    return (
        f"/metrics: {answered:.0f} /v2/rerank answered, {refused:.0f} refused (401), {pairs:.0f} pairs scored by tiny"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--tiny", required=True, help="host path of the tiny cross-encoder baked into the image")
    args = parser.parse_args()
    url = args.url.rstrip("/")

    from rerankd import Reranker

    tiny = Reranker.from_pretrained(args.tiny, device="cpu", dtype="float32")
    minilm = Reranker.from_pretrained("all-MiniLM-L6-v2", device="cpu", dtype="float32")
    tiny_want = {r.index: r.score for r in tiny.rank(QUERY, DOCS)}
    minilm_want = {r.index: r.score for r in minilm.rank(QUERY, DOCS)}

    refused = httpx.post(f"{url}/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS}, timeout=30)
    check(refused.status_code == 401, f"a request without the key got {refused.status_code}, not 401")
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {args.api_key}"}, timeout=30).json()
    served = {card["id"] for card in models["data"]}
    check({"tiny", "tiny-mounted", "minilm"} <= served, f"/v1/models serves {sorted(served)}")

    lines = [
        "no key: 401; /v1/models: " + ", ".join(sorted(served)),
        cohere_v2(url, args.api_key, "tiny", tiny_want),
        cohere_v2(url, args.api_key, "tiny-mounted", tiny_want),
        cohere_v2(url, args.api_key, "minilm", minilm_want),
        openai_embeddings(url, args.api_key, minilm.embed(DOCS)),
        metrics(url, v2_calls=3),
    ]
    for line in lines:
        print(f"  ok  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
