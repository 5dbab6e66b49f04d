"""Every error status of the contract, with its message and body shape (default and TEI)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from rerankd import Reranker
from rerankd.families.base import CallOptions, PairScorer
from rerankd.server import schemas as s
from tests.server.conftest import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(90)

QUERY = "what is the giant panda?"
DOCS = ["the giant panda is a bear", "hello world"]
LONG = " ".join(["panda"] * 300)


def error_of(response: httpx.Response, status: int) -> s.ErrorResponse:
    assert response.status_code == status, response.text
    body = s.ErrorResponse.model_validate(response.json())
    assert body.message == body.error.message
    assert body.request_id == response.headers["x-request-id"]
    return body


def tei_error_of(response: httpx.Response, status: int) -> s.TEIErrorResponse:
    assert response.status_code == status, response.text
    return s.TEIErrorResponse.model_validate(response.json())


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/rerank", {"query": "", "documents": DOCS}, "query must not be empty"),
        ("/v1/rerank", {"query": "  ", "documents": DOCS}, "query must not be empty"),
        ("/v1/rerank", {"query": QUERY, "documents": []}, "documents must not be empty"),
        ("/v2/rerank", {"query": QUERY, "documents": []}, "documents must not be empty"),
        ("/score", {"text_1": QUERY, "text_2": []}, "text_2 must not be empty"),
        ("/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_1 has 2 texts and text_2 has 3"),
        ("/score", {"query": QUERY}, "give text_1 and text_2"),
        ("/v1/embeddings", {"model": "minilm", "input": []}, "input must not be empty"),
        ("/v1/rerank", {"query": QUERY, "documents": [{"title": "x"}]}, "documents[0] has no field 'text'"),
    ],
)
def test_400_invalid_input(main_server: RunningServer, route: str, body: dict, message: str) -> None:
    with main_server.client() as client:
        error = error_of(client.post(route, json=body), 400)
    assert message in error.message
    assert error.error.type == "invalid_request_error"


def test_400_tei_shape(main_server: RunningServer) -> None:
    with main_server.client() as client:
        empty = tei_error_of(client.post("/rerank", json={"query": "", "texts": DOCS}), 400)
        no_texts = tei_error_of(client.post("/rerank", json={"query": QUERY, "texts": []}), 400)
        single = tei_error_of(client.post("/predict", json={"inputs": "just one text"}), 400)
    assert empty == s.TEIErrorResponse(error="query must not be empty", error_type="empty")
    assert no_texts.error == "texts must not be empty"
    assert single.error_type == "validation" and "pairs" in single.error


def test_404_unknown_model(main_server: RunningServer) -> None:
    with main_server.client() as client:
        error = error_of(client.post("/v1/rerank", json={"model": "gpt-9", "query": QUERY, "documents": DOCS}), 404)
        tei = tei_error_of(client.post("/rerank", json={"model": "gpt-9", "query": QUERY, "texts": DOCS}), 404)
        route = error_of(client.get("/no/such/route"), 404)
    assert error.message.startswith("model 'gpt-9' is not served here") and error.error.code == "model_not_found"
    assert "tiny" in error.message and error.error.param == "model"
    assert "gpt-9" in tei.error
    assert route.error.type == "not_found_error"


def test_400_over_long_input_with_truncation_off(main_server: RunningServer, bert: Reranker) -> None:
    body = {"model": "tiny", "query": QUERY, "documents": ["short", LONG], "truncate": False}
    with main_server.client() as client:
        error = error_of(client.post("/rerank", json=body), 400)
        tei = tei_error_of(client.post("/rerank", json={"query": QUERY, "texts": ["a", LONG], "truncate": False}), 400)
    assert isinstance(bert.family, PairScorer)
    full = bert.family.encode_pairs(QUERY, [LONG], CallOptions())[0].full_length
    assert full > 300
    assert error.message.startswith(f"input 1 has {full} tokens, over the model's limit of 128")
    assert error.error.code == "input_too_long" and error.error.param == "documents"
    assert tei.error.startswith(f"input 1 has {full} tokens")


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v2/rerank", {"query": QUERY, "documents": DOCS, "return_documents": True}, "return_documents"),
        ("/v2/rerank", {"query": QUERY, "documents": DOCS, "rank_fields": ["text"]}, "rank_fields"),
        ("/v2/rerank", {"query": QUERY, "documents": [{"text": "x"}]}, "documents.0"),
        ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": "three"}, "top_n"),
        ("/v1/rerank", {"documents": DOCS}, "query"),
        ("/score", {"text_1": 5, "text_2": "x"}, "text_1"),
        ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_422_schema_violations(main_server: RunningServer, route: str, body: dict, param: str) -> None:
    with main_server.client() as client:
        error = error_of(client.post(route, json=body), 422)
    assert error.error.param is not None and error.error.param.startswith(param)
    assert error.message.startswith("invalid request:")


def test_422_unknown_fields_on_v2_name_the_field(main_server: RunningServer) -> None:
    with main_server.client() as client:
        error = error_of(client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "colour": "red"}), 422)
        lenient = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "colour": "red"})
    assert "colour" in error.message and "Extra inputs are not permitted" in error.message
    assert lenient.status_code == 200


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"query": "q",\n "documents": [not json]}', "at line 2 column 16"),
        (b'{"query": "\xff\xfe", "documents": ["a"]}', "not UTF-8"),
        (b'{"query": "q", "documents": ["a"], "top_n": ' + b"9" * 5000 + b"}", "number too long"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["syntax", "utf8", "huge-int", "deep"],
)
def test_malformed_bodies_are_one_400_with_an_actionable_message(
    main_server: RunningServer, content: bytes, reason: str
) -> None:
    with main_server.client() as client:
        answer = client.post("/v1/rerank", content=content, headers={"content-type": "application/json"})
    error = error_of(answer, 400)
    assert error.error.code == "invalid_json" and error.error.param == "body"
    assert error.message.startswith("the request body is not valid JSON") and reason in error.message


def test_405_names_the_allowed_methods(main_server: RunningServer) -> None:
    with main_server.client() as client:
        answer = client.get("/v1/rerank")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


def test_the_dialect_that_parses_a_request_formats_its_error(main_server: RunningServer) -> None:
    with main_server.client() as client:
        both = client.post("/rerank", json={"query": "q", "documents": [1], "texts": ["a"]})  # Cohere's schema
        tei = client.post("/rerank", json={"query": "q", "texts": [1]})
        tei_on_v1 = client.post("/v1/rerank", json={"query": "q", "texts": ["a"]})  # /v1/rerank is Cohere's only
    assert error_of(both, 422).error.param is not None
    assert tei_error_of(tei, 422).error_type == "validation"
    assert error_of(tei_on_v1, 422).error.param == "documents"


def test_an_over_long_query_with_truncate_false_is_a_400_even_when_chunking(main_server: RunningServer) -> None:
    query = " ".join(["panda"] * 600)
    with main_server.client() as client:
        for extra in ({}, {"max_chunks_per_doc": 3}, {"max_tokens_per_doc": 100}):
            body = {"model": "tiny", "query": query, "documents": DOCS, "truncate": False, **extra}
            error = error_of(client.post("/v1/rerank", json=body), 400)
            assert error.error.code == "input_too_long" and error.error.param == "query", extra
        cut = client.post("/v1/rerank", json={"model": "tiny", "query": query, "documents": DOCS}).json()
    assert any(w.startswith("the query was truncated") for w in cut["meta"]["warnings"])


def test_chunk_requests_past_the_server_limit_are_refused_before_any_work(
    start_server: ServerFactory, bert: Reranker
) -> None:
    server = start_server({"tiny": bert}, max_queue=64, max_chunks_per_doc=8)
    long_doc = " ".join(f"word{i}" for i in range(4000))
    with server.client() as client:
        over = client.post("/v1/rerank", json={"query": QUERY, "documents": [long_doc], "max_chunks_per_doc": 100})
        rows = client.post("/v1/rerank", json={"query": QUERY, "documents": [long_doc] * 9, "max_chunks_per_doc": 8})
    assert error_of(over, 400).error.param == "max_chunks_per_doc"
    assert error_of(rows, 413).error.code == "payload_too_large"  # 9 x 8 windows > 64 queued inputs
    assert server.metric("rerankd_batch_size_count", model="tiny") == 0  # nothing reached the model


def test_openai_embeddings_refuse_empty_strings_and_accept_token_ids(main_server: RunningServer, minilm) -> None:  # type: ignore[no-untyped-def]
    ids = minilm.family.backend.encode("giant panda", add_special_tokens=False).ids
    with main_server.client() as client:
        empty = client.post("/v1/embeddings", json={"model": "minilm", "input": ["panda", ""]})
        by_ids = client.post("/v1/embeddings", json={"model": "minilm", "input": [ids, ids]}).json()
        by_text = client.post("/v1/embeddings", json={"model": "minilm", "input": "giant panda"}).json()
        outside = client.post("/v1/embeddings", json={"model": "minilm", "input": [10**9]})
    assert error_of(empty, 400).message.startswith("input[1] must not be empty")
    assert len(by_ids["data"]) == 2
    assert by_ids["data"][0]["embedding"] == pytest.approx(by_text["data"][0]["embedding"], abs=1e-6)
    assert "outside the model's vocabulary" in error_of(outside, 400).message


def test_413_too_many_documents_and_body_over_limit(start_server: ServerFactory, bert: Reranker) -> None:
    server = start_server({"tiny": bert}, max_documents=5, max_body_bytes=4096)
    with server.client() as client:
        many = error_of(client.post("/rerank", json={"query": QUERY, "documents": ["d"] * 6}), 413)
        tei = tei_error_of(client.post("/rerank", json={"query": QUERY, "texts": ["d"] * 6}), 413)
        score = error_of(client.post("/score", json={"text_1": QUERY, "text_2": ["d"] * 6}), 413)
        big = client.post("/rerank", json={"query": QUERY, "documents": ["x" * 5000]})
        chunked = client.post("/rerank", content=(b"x" * 1000 for _ in range(6)))  # no content-length
        fits = client.post("/rerank", json={"query": QUERY, "documents": ["d"] * 5})
    assert many.message == "too many documents: 6, the limit is 5 per request"
    assert tei.error == many.message
    assert score.error.code == "payload_too_large"
    assert error_of(big, 413).message == "request body over the payload limit of 4096 bytes"
    assert error_of(chunked, 413).error.code == "payload_too_large"
    assert fits.status_code == 200


def test_429_with_retry_after_when_the_queue_is_full(start_server: ServerFactory, sleepy_bert: Reranker) -> None:
    server = start_server({"tiny": sleepy_bert}, max_queue=400, retry_after_s=2)
    outcome: dict[str, httpx.Response] = {}
    big_body = {"query": QUERY, "documents": [f"document number {i} about pandas" for i in range(400)]}

    def big() -> None:
        with server.client() as client:
            outcome["big"] = client.post("/rerank", json=big_body)

    thread = threading.Thread(target=big)
    thread.start()
    deadline = time.monotonic() + 20
    while server.metric("rerankd_queue_depth", model="tiny") == 0:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.005)
    more = DOCS * 50  # 100 inputs: no room next to the ~400 still queued (the queue drains at ~250 inputs/s)
    with server.client() as client:
        refused = client.post("/rerank", json={"query": QUERY, "documents": more})
        tei = client.post("/rerank", json={"query": QUERY, "texts": more})
    thread.join(timeout=60)
    error = error_of(refused, 429)
    assert refused.headers["retry-after"] == "2"
    assert "queue" in error.message and error.error.type == "rate_limit_error"
    assert tei_error_of(tei, 429).error_type == "overloaded"
    assert outcome["big"].status_code == 200 and len(outcome["big"].json()["results"]) == 400
    assert server.metric("rerankd_rejections_total", model="tiny", reason="queue_full") >= 2


def test_429_with_code_timeout_when_a_request_times_out(start_server: ServerFactory, slow_bert: Reranker) -> None:
    server = start_server({"tiny": slow_bert}, request_timeout_s=0.05, retry_after_s=3)
    body = {"query": QUERY, "documents": [f"document number {i} about pandas" for i in range(400)]}
    with server.client() as client:
        late = client.post("/rerank", json=body)
        tei = client.post("/rerank", json={"query": QUERY, "texts": body["documents"]})
    error = error_of(late, 429)  # API.md: over capacity is 429 with Retry-After, like a full queue
    assert late.headers["retry-after"] == "3"
    assert error.error.code == "timeout" and "did not finish within 0.05 s" in error.message
    assert tei_error_of(tei, 429).error_type == "overloaded"
    assert server.metric("rerankd_rejections_total", model="tiny", reason="timeout") >= 2
    deadline = time.monotonic() + 20  # the timed-out requests' queued pairs are dropped, not left behind
    while server.metric("rerankd_queue_depth", model="tiny") > 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_503_while_loading_and_when_loading_failed(start_server: ServerFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(models=(f"broken={tmp_path}",), wait_ready=False)
    with server.client() as client:
        deadline = time.monotonic() + 20
        while client.get("/ready").json().get("message", "").startswith("not ready: loading"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        ready = error_of(client.get("/ready"), 503)
        request = error_of(client.post("/rerank", json={"query": QUERY, "documents": DOCS}), 503)
        health = client.get("/health")
    assert ready.message == "not ready: failed"  # open route: no model names, paths or exception text
    assert "model loading failed" in request.message and str(tmp_path) not in request.message
    assert request.error.type == "service_unavailable"
    assert health.status_code == 503


def test_500_is_generic_with_request_id_and_the_server_stays_healthy(
    start_server: ServerFactory, failing_bert: Reranker
) -> None:
    server = start_server({"tiny": failing_bert})
    with server.client() as client:
        failed = client.post("/rerank", json={"query": QUERY, "documents": ["a forest of bamboo", "x"]})
        ok = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
        health = client.get("/health")
    error = error_of(failed, 500)
    assert error.message == f"internal server error; request id {failed.headers['x-request-id']}"
    assert "CUDA" not in failed.text and "secret" not in failed.text and "Traceback" not in failed.text
    assert ok.status_code == 200 and health.status_code == 200


def test_401_without_or_with_a_wrong_key(start_server: ServerFactory, bert: Reranker) -> None:
    server = start_server({"tiny": bert}, api_key=("k-one", "k-two"))
    body = {"query": QUERY, "documents": DOCS}
    with server.client() as client:
        missing = error_of(client.post("/rerank", json=body), 401)
        wrong = client.post("/rerank", json=body, headers={"Authorization": "Bearer k-three"})
        good = client.post("/rerank", json=body, headers={"Authorization": "Bearer k-two"})
        open_routes = [client.get(path).status_code for path in ("/health", "/ready", "/metrics", "/docs")]
    assert "missing API key" in missing.message and missing.error.type == "authentication_error"
    assert error_of(wrong, 401).message == "invalid API key"
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert good.status_code == 200
    assert open_routes == [200, 200, 200, 200]
