"""Every route and dialect over real HTTP; bodies validated with the schema models; scores checked
against the offline library on the same weights."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.jobs import Defaults
from rerankd.server import schemas as s
from tests.server.conftest import RunningServer

pytestmark = pytest.mark.timeout(60)

QUERY = "what is the giant panda bear of china?"
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello world"]


def offline(reranker: Reranker, query: str, docs: list[str]) -> dict[int, float]:
    return {r.index: r.score for r in reranker.rank(query, docs)}


def test_rerank_cohere_v1_jina_shape(main_server: RunningServer, bert: Reranker) -> None:
    body = {"model": "tiny", "query": QUERY, "documents": DOCS, "top_n": 2}
    with main_server.client() as client:
        response = client.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    parsed = s.RerankResponse.model_validate(response.json())
    assert parsed.model == "tiny" and parsed.id.startswith("rerank-")
    want = offline(bert, QUERY, DOCS)
    assert [r.index for r in parsed.results] == sorted(want, key=lambda i: -want[i])[:2]
    for result in parsed.results:
        assert result.relevance_score == pytest.approx(want[result.index], abs=1e-6)
        assert result.document == {"text": DOCS[result.index]}
    tokens = sum(bert.count_tokens(QUERY, DOCS))
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == tokens
    assert parsed.meta.tokens.input_tokens == tokens and parsed.meta.warnings == []
    assert parsed.meta.api_version.version == "1" and parsed.meta.billed_units.search_units == 1


def test_document_key_is_omitted_not_null(main_server: RunningServer) -> None:
    body = {"model": "tiny", "query": QUERY, "documents": DOCS, "return_documents": False}
    with main_server.client() as client:
        results = client.post("/rerank", json=body).json()["results"]
        v2 = client.post("/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS}).json()["results"]
    assert results and all("document" not in r for r in results)
    assert v2 and all(set(r) == {"index", "relevance_score"} for r in v2)


def test_object_documents_rank_fields_and_top_k_alias(main_server: RunningServer, bert: Reranker) -> None:
    documents = [{"title": "panda", "text": DOCS[0], "id": 7}, {"title": "paris", "text": DOCS[1], "id": 8}]
    body = {"model": "tiny", "query": QUERY, "documents": documents, "rank_fields": ["title", "text"], "top_k": 1}
    with main_server.client() as client:
        parsed = s.RerankResponse.model_validate(client.post("/rerank", json=body).json())
        default = client.post("/rerank", json={"model": "tiny", "query": QUERY, "documents": documents}).json()
    assert len(parsed.results) == 1 and parsed.results[0].document == documents[parsed.results[0].index]
    joined = [f"title: {d['title']}\ntext: {d['text']}" for d in documents]
    want = offline(bert, QUERY, joined)
    assert parsed.results[0].relevance_score == pytest.approx(max(want.values()), abs=1e-6)
    by_text = offline(bert, QUERY, [str(d["text"]) for d in documents])
    assert {r["index"]: r["relevance_score"] for r in default["results"]} == pytest.approx(by_text, abs=1e-6)


def test_raw_scores_and_use_activation(main_server: RunningServer, bert: Reranker) -> None:
    raw = Reranker(replace(bert.model, defaults=Defaults(normalize=False)))
    want = offline(raw, QUERY, DOCS)
    with main_server.client() as client:
        for extra in ({"raw_scores": True}, {"use_activation": False}):
            got = client.post("/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS, **extra}).json()
            assert {r["index"]: r["relevance_score"] for r in got["results"]} == pytest.approx(want, abs=1e-6)


def test_tei_rerank_is_a_bare_array(main_server: RunningServer, bert: Reranker) -> None:
    with main_server.client() as client:
        plain = client.post("/rerank", json={"model": "tiny", "query": QUERY, "texts": DOCS})
        texts = client.post("/rerank", json={"model": "tiny", "query": QUERY, "texts": DOCS, "return_text": True})
    ranks = s.TEIRerankResponse.model_validate(plain.json()).root
    assert isinstance(plain.json(), list) and all("text" not in r for r in plain.json())
    want = offline(bert, QUERY, DOCS)
    assert [r.index for r in ranks] == sorted(want, key=lambda i: -want[i])
    assert {r.index: r.score for r in ranks} == pytest.approx(want, abs=1e-6)
    assert [r["text"] for r in texts.json()] == [DOCS[r.index] for r in ranks]


@pytest.mark.parametrize(
    ("fields", "expected_pairs"),
    [
        ({"text_1": "q one", "text_2": "d one"}, [("q one", "d one")]),
        ({"text_1": "q one", "text_2": ["d one", "d two"]}, [("q one", "d one"), ("q one", "d two")]),
        ({"text_1": ["q one", "q two"], "text_2": ["d one", "d two"]}, [("q one", "d one"), ("q two", "d two")]),
        ({"queries": ["q one"], "documents": ["d one", "d two"]}, [("q one", "d one"), ("q one", "d two")]),
        ({"queries": "q one", "items": ["d two"]}, [("q one", "d two")]),
        ({"data_1": ["q one", "q two"], "data_2": ["d one", "d two"]}, [("q one", "d one"), ("q two", "d two")]),
    ],
)
def test_vllm_score_field_pairs(
    main_server: RunningServer, bert: Reranker, fields: dict, expected_pairs: list[tuple[str, str]]
) -> None:
    with main_server.client() as client:
        for route in ("/score", "/v1/score"):
            response = client.post(route, json={"model": "tiny", **fields})
            assert response.status_code == 200, response.text
            parsed = s.ScoreResponse.model_validate(response.json())
            assert [d.index for d in parsed.data] == list(range(len(expected_pairs)))
            assert [d.score for d in parsed.data] == pytest.approx(bert.score(expected_pairs), abs=1e-6)
            tokens = sum(sum(bert.count_tokens(q, [d])) for q, d in expected_pairs)
            assert parsed.usage.prompt_tokens == tokens and parsed.object == "list"


def test_tei_predict_single_and_batch(main_server: RunningServer, bert: Reranker) -> None:
    with main_server.client() as client:
        single = client.post("/predict", json={"model": "tiny", "inputs": [QUERY, DOCS[0]]}).json()
        batch = client.post("/predict", json={"model": "tiny", "inputs": [[QUERY, d] for d in DOCS]}).json()
    s.PredictResponse.model_validate(single)
    s.PredictResponse.model_validate(batch)
    assert single[0]["score"] == pytest.approx(bert.score([(QUERY, DOCS[0])])[0], abs=1e-6)
    assert [row[0]["score"] for row in batch] == pytest.approx(bert.score([(QUERY, d) for d in DOCS]), abs=1e-6)


def test_openai_embeddings_float_base64_dimensions(main_server: RunningServer, minilm: Reranker) -> None:
    want = minilm.embed(DOCS)
    with main_server.client() as client:
        floats = client.post("/v1/embeddings", json={"model": "minilm", "input": DOCS}).json()
        packed = client.post("/v1/embeddings", json={"model": "minilm", "input": DOCS, "encoding_format": "base64"})
        short = client.post("/v1/embeddings", json={"model": "minilm", "input": DOCS[0], "dimensions": 8}).json()
    parsed = s.EmbeddingResponse.model_validate(floats)
    assert np.abs(np.array([d.embedding for d in parsed.data]) - want).max() < 1e-5
    assert parsed.usage.prompt_tokens == sum(len(x) for x in minilm.prepare_embed(DOCS).items)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed.json()["data"]]
    assert np.abs(np.array(decoded) - want).max() < 1e-5
    vector = np.array(short["data"][0]["embedding"])
    assert vector.shape == (8,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_models_health_ready_metrics_docs(main_server: RunningServer) -> None:
    with main_server.client() as client:
        models = s.ModelList.model_validate(client.get("/v1/models").json())
        cards = {card.id: card for card in models.data}
        assert cards["tiny"].kind == "reranker" and cards["tiny"].family == "cross-encoder"
        assert cards["tiny"].max_length == 128
        assert cards["minilm"].kind == "embedder"
        assert cards["ab"].routes_to == {"tiny": 50.0, "tiny-b": 50.0}
        assert s.Health.model_validate(client.get("/health").json()).status == "ok"
        assert client.get("/ready").json() == {"status": "ready"}  # open routes name no models
        client.post("/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS})
        metrics = client.get("/metrics").text
        assert 'rerankd_requests_total{route="/rerank",status="200"}' in metrics
        assert "rerankd_batch_size_bucket" in metrics and "rerankd_queue_seconds_bucket" in metrics
        assert "rerankd_queue_depth" in metrics
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        for route in ("/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score", "/predict", "/v1/embeddings"):
            assert route in paths


def test_docs_work_offline_and_are_counted_by_route(main_server: RunningServer) -> None:
    """/docs and /redoc load their scripts from this server (no CDN), and docs requests are labelled in /metrics."""
    with main_server.client() as client:
        page = client.get("/docs").text
        redoc = client.get("/redoc").text
        assets = [src for src in re.findall(r'(?:src|href)="([^"]+)"', page + redoc) if not src.startswith("data:")]
        assert assets and all(src.startswith("/static/docs/") for src in assets), assets
        for src in assets:
            fetched = client.get(src)
            assert fetched.status_code == 200 and len(fetched.content) > 1000, src
        assert client.get("/openapi.json").status_code == 200
        metrics = client.get("/metrics").text
    assert "cdn" not in (page + redoc).lower() and "googleapis" not in redoc
    for route in ("/docs", "/redoc", "/openapi.json"):
        assert f'rerankd_requests_total{{route="{route}",status="200"}}' in metrics, route


def test_ab_route_names_the_chosen_model(main_server: RunningServer, bert: Reranker, xlmr: Reranker) -> None:
    body = {"query": QUERY, "documents": DOCS[:1]}
    seen: dict[str, float] = {}
    with main_server.client() as client:
        for _ in range(30):
            got = client.post("/rerank", json={**body, "model": "ab"}).json()
            seen[got["model"]] = got["results"][0]["relevance_score"]
        only_b = {client.post("/rerank", json={**body, "model": "only-b"}).json()["model"] for _ in range(5)}
    assert set(seen) == {"tiny", "tiny-b"}  # 50:50 over 30 draws: both (p of one missing ~ 2e-9)
    assert seen["tiny"] == pytest.approx(bert.score([(QUERY, DOCS[0])])[0], abs=1e-6)
    assert seen["tiny-b"] == pytest.approx(xlmr.score([(QUERY, DOCS[0])])[0], abs=1e-6)
    assert only_b == {"tiny-b"}


def test_default_model_and_request_id_header(main_server: RunningServer) -> None:
    with main_server.client() as client:
        response = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        echoed = client.get("/health", headers={"x-request-id": "my-trace-42"})
    assert response.json()["model"] == "tiny"  # the first served model
    assert len(response.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "my-trace-42"


def test_long_documents_chunked_or_truncated_with_warning(main_server: RunningServer, bert: Reranker) -> None:
    long_doc = " ".join(["the giant panda eats bamboo in the forest of china"] * 40)
    docs = ["short", long_doc]
    with main_server.client() as client:
        truncated = client.post("/rerank", json={"model": "tiny", "query": QUERY, "documents": docs}).json()
        chunked = client.post(
            "/v1/rerank", json={"model": "tiny", "query": QUERY, "documents": docs, "max_chunks_per_doc": 10}
        ).json()
        v2 = client.post(
            "/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": docs, "max_tokens_per_doc": 4096}
        ).json()
    assert truncated["meta"]["warnings"] and "document 1" in truncated["meta"]["warnings"][0]
    want = {r.index: r.score for r in bert.rank(QUERY, docs, max_chunks_per_doc=10)}
    assert {r["index"]: r["relevance_score"] for r in chunked["results"]} == pytest.approx(want, abs=1e-6)
    assert chunked["usage"]["prompt_tokens"] > truncated["usage"]["prompt_tokens"]
    want_v2 = {r.index: r.score for r in bert.rank(QUERY, docs, max_tokens_per_doc=4096)}
    assert {r["index"]: r["relevance_score"] for r in v2["results"]} == pytest.approx(want_v2, abs=1e-6)


def test_bi_encoder_rerank_returns_cosines(main_server: RunningServer, minilm: Reranker) -> None:
    with main_server.client() as client:
        parsed = s.RerankResponse.model_validate(
            client.post("/rerank", json={"model": "minilm", "query": QUERY, "documents": DOCS}).json()
        )
    want = offline(minilm, QUERY, DOCS)
    assert {r.index: r.relevance_score for r in parsed.results} == pytest.approx(want, abs=1e-5)
    assert parsed.results[0].index == 0  # the real MiniLM puts the panda passage first
    assert parsed.usage.prompt_tokens == sum(minilm.count_tokens(QUERY, DOCS))
