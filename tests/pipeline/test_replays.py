"""Elasticsearch and OpenSearch calling rerankd: their exact request bodies, built the way each engine builds them
(source read from elastic/elasticsearch and opensearch-project/ml-commons, cited per test), replayed against a
running `rerankd serve`, and the response parsed the way each engine parses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from rerankd.settings import Settings
from tests.server.conftest import RunningServer, serve

if TYPE_CHECKING:
    from rerankd import Reranker

pytestmark = pytest.mark.contract
QUERY = "what is a panda?"
DOCS = [
    "Paris is the capital of France.",
    "The giant panda is a bear native to China that eats bamboo.",
    "Panda Express is a fast food restaurant chain.",
    "The red panda is a small mammal of the eastern Himalayas.",
]


@pytest.fixture(scope="module")
def server(bert_ce: Path) -> Iterator[RunningServer]:
    from rerankd import Reranker

    reranker: Reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    with serve(Settings(cache="none"), {"bge-reranker": reranker}) as running:
        yield running


def expected_scores(server: RunningServer) -> list[float]:
    """Each document's score from rerankd's own /v1/score, in input order."""
    body = {"model": "bge-reranker", "text_1": QUERY, "text_2": DOCS}
    data = httpx.post(f"{server.url}/v1/score", json=body, timeout=30).json()["data"]
    return [item["score"] for item in sorted(data, key=lambda item: item["index"])]


def post_raw(server: RunningServer, path: str, text: str) -> httpx.Response:
    """The body exactly as the engine writes it (a template filled in as text, not re-serialised)."""
    return httpx.post(server.url + path, content=text.encode(), headers={"Content-Type": "application/json"},
                      timeout=30)  # fmt: skip


def json_path_all(body: Any, path: str) -> list[Any]:
    """The ``$.a.b[*].c`` subset of JSONPath that ES's custom service and ML Commons use."""
    values = [body]
    for part in path.removeprefix("$.").split("."):
        name, wildcard = part.removesuffix("[*]"), part.endswith("[*]")
        values = [v[name] for v in values]
        if wildcard:
            values = [item for v in values for item in v]
    return values


def no_integer_scores(text: str) -> dict[str, Any]:
    """Parse keeping integers visible: ML Commons casts relevance_score to Double, so `1` would break it."""
    return json.loads(text, parse_int=lambda s: ("INT", int(s)))


# ---------------------------------------------------------------------------------------------- Elasticsearch
def es_custom_body(template: str, query: str, inputs: list[str], top_n: int | None = None) -> str:
    """ES `custom` service: RerankParameters/RequestParameters put JSON-encoded values in the template:
    ${query} -> "\"...\"", ${input} -> JSON array, ${top_n}/${return_documents} -> JSON (RerankParametersTests)."""
    values = {"query": json.dumps(query), "input": json.dumps(inputs)}
    if top_n is not None:
        values["top_n"] = json.dumps(top_n)
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    assert "${" not in template, "ES refuses a template with an unreplaced placeholder"
    return template


ES_CUSTOM_TEMPLATE = """
    {
      "model": "bge-reranker",
      "query": ${query},
      "documents": ${input}
    }
    """


def test_elasticsearch_custom_service_rerank(server: RunningServer) -> None:
    response = post_raw(server, "/v1/rerank", es_custom_body(ES_CUSTOM_TEMPLATE, QUERY, DOCS))
    assert response.status_code == 200, response.text
    body = response.json()
    # "json_parser": {"relevance_score": "$.results[*].relevance_score", "reranked_index": "$.results[*].index"}
    scores = json_path_all(body, "$.results[*].relevance_score")
    indices = json_path_all(body, "$.results[*].index")
    texts = json_path_all(body, "$.results[*].document.text")  # optional "document_text" path
    # text_similarity_reranker needs one score per input document
    # ("Reranker input document count and returned score count mismatch" otherwise)
    assert sorted(indices) == list(range(len(DOCS)))
    by_index = dict(zip(indices, scores, strict=True))
    assert [by_index[i] for i in range(len(DOCS))] == pytest.approx(expected_scores(server), abs=1e-6)
    assert texts == [DOCS[i] for i in indices]
    assert scores == sorted(scores, reverse=True)


def test_elasticsearch_custom_service_with_top_n(server: RunningServer) -> None:
    template = '{"model": "bge-reranker", "query": ${query}, "documents": ${input}, "top_n": ${top_n}}'
    body = post_raw(server, "/v1/rerank", es_custom_body(template, QUERY, DOCS, top_n=2)).json()
    assert len(json_path_all(body, "$.results[*].index")) == 2


def test_elasticsearch_cohere_service_pointed_at_rerankd(server: RunningServer) -> None:
    """ES `cohere` service with `url` set: CohereV2RerankRequest posts {model, query, documents[, top_n]} to
    <url>/v2/rerank and reads results[].index / relevance_score."""
    body = {"model": "bge-reranker", "query": QUERY, "documents": DOCS, "top_n": 4}
    response = httpx.post(f"{server.url}/v2/rerank", json=body, timeout=30)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    scores = {r["index"]: r["relevance_score"] for r in results}
    assert [scores[i] for i in range(len(DOCS))] == pytest.approx(expected_scores(server), abs=1e-6)


def test_elasticsearch_cohere_service_with_task_settings(server: RunningServer) -> None:
    """ES's cohere service sends return_documents/max_chunks_per_doc when its task_settings set them."""
    body = {"model": "bge-reranker", "query": QUERY, "documents": DOCS, "return_documents": False,
            "top_n": 4, "max_chunks_per_doc": 2}  # fmt: skip
    answer = httpx.post(f"{server.url}/v2/rerank", json=body, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 4


def test_elasticsearch_hugging_face_service_tei_body(server: RunningServer) -> None:
    """ES `hugging_face` rerank (HuggingFaceRerankRequestEntity, TEI form): {"texts", "query", "return_text",
    "top_n"} to the TEI /rerank URL; the response is a bare array of {index, score[, text]}."""
    body = {"texts": DOCS, "query": QUERY, "return_text": True, "top_n": 4}
    response = httpx.post(f"{server.url}/rerank", json=body, timeout=30)
    assert response.status_code == 200, response.text
    items = response.json()
    assert isinstance(items, list) and sorted(i["index"] for i in items) == list(range(len(DOCS)))
    scores = {i["index"]: i["score"] for i in items}
    assert [scores[i] for i in range(len(DOCS))] == pytest.approx(expected_scores(server), abs=1e-6)
    assert all(item["text"] == DOCS[item["index"]] for item in items)


# ---------------------------------------------------------------------------------------------- OpenSearch
OS_REQUEST_BODY = (
    '{ "documents": ${parameters.documents}, "query": "${parameters.query}", "model": "${parameters.model}", '
    '"top_n": ${parameters.top_n} }'
)  # the Cohere rerank connector blueprint's request_body, with url set to rerankd's /v1/rerank


def os_connector_body(query: str, documents: list[str], model: str) -> str:
    """ML Commons: CohereRerankPreProcessFunction -> {query, documents, top_n = len(documents)};
    convertScriptStringToJsonString keeps strings as they are and gson-encodes the rest; the connector's
    parameters (model) join them; ${parameters.X} is substituted as text."""
    parameters = {"query": query, "documents": json.dumps(documents), "top_n": json.dumps(len(documents)),
                  "model": model}  # fmt: skip
    body = OS_REQUEST_BODY
    for name, value in parameters.items():
        body = body.replace("${parameters." + name + "}", value)
    return body


def test_opensearch_ml_commons_cohere_rerank_connector(server: RunningServer) -> None:
    response = post_raw(server, "/v1/rerank", os_connector_body(QUERY, DOCS, "bge-reranker"))
    assert response.status_code == 200, response.text
    results = no_integer_scores(response.text)["results"]  # post_process JSON path "$.results"
    # CohereRerankPostProcessFunction: every result has index and relevance_score; scores[index] = (Double) score
    assert all("index" in r and "relevance_score" in r for r in results)
    assert all(not isinstance(r["relevance_score"], tuple) for r in results), "a score serialised as an integer"
    assert all(isinstance(r["index"], tuple) and r["index"][0] == "INT" for r in results)
    similarity = [0.0] * len(results)
    for r in results:
        similarity[r["index"][1]] = r["relevance_score"]
    assert len(similarity) == len(DOCS)  # one "similarity" tensor per input document, in input order
    assert similarity == pytest.approx(expected_scores(server), abs=1e-6)
    # the `rerank` search response processor (ml_opensearch) then orders hits by these scores
    order = sorted(range(len(DOCS)), key=lambda i: -similarity[i])
    assert [r["index"][1] for r in results] == order
