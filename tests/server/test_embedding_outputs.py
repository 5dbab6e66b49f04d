"""/v1/embeddings ``outputs``: bge-m3's sparse and multi-vector outputs (and ColBERT's multi-vectors) over real HTTP,
equal to the library's :func:`rerankd.multi_output.embed_outputs` for the same texts; models without them get a
typed 400; a request without ``outputs`` gets OpenAI's response unchanged."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.multi_output import embed_outputs
from rerankd.server import schemas as s
from rerankd.settings import Settings
from tests.families_new.tiny_colbert import build_colbert_bert
from tests.families_new.tiny_m3 import build_m3
from tests.server.conftest import RunningServer, serve
from tests.server.test_errors import error_of

TEXTS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello hello world"]
ALL = ("dense", "sparse", "multi_vector")


@pytest.fixture(scope="module")
def m3(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    folder = build_m3(tmp_path_factory.mktemp("server-m3") / "tiny-m3")
    return Reranker.from_pretrained(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def colbert(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    folder = build_colbert_bert(tmp_path_factory.mktemp("server-colbert") / "tiny-colbert")
    return Reranker.from_pretrained(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def outputs_server(m3: Reranker, colbert: Reranker, minilm: Reranker, bert: Reranker) -> Iterator[RunningServer]:
    """The bi-encoder first, so that a request without ``model`` finds its model by the outputs it asks."""
    models = {"minilm": minilm, "m3": m3, "colbert": colbert, "tiny": bert}
    with serve(Settings(cache="none"), models) as running:
        yield running


def _post(server: RunningServer, body: dict) -> dict:
    with server.client() as client:
        response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    s.EmbeddingResponse.model_validate(response.json())
    return dict(response.json())


def test_m3_outputs_equal_the_library(outputs_server: RunningServer, m3: Reranker) -> None:
    want = embed_outputs(m3, TEXTS, output=ALL)
    assert want.dense is not None and want.sparse is not None and want.multi_vector is not None
    body = _post(outputs_server, {"model": "m3", "input": TEXTS, "outputs": list(ALL)})
    assert body["model"] == "m3" and body["usage"]["prompt_tokens"] == sum(want.tokens)
    for item, dense, sparse, multi in zip(body["data"], want.dense, want.sparse, want.multi_vector, strict=True):
        assert np.abs(np.array(item["embedding"]) - dense).max() <= 1e-6
        assert item["sparse"]["indices"] == sorted(sparse)
        assert item["sparse"]["values"] == pytest.approx([sparse[k] for k in sorted(sparse)], abs=1e-6)
        assert np.array(item["multi_vector"]).shape == multi.shape
        assert np.abs(np.array(item["multi_vector"]) - multi).max() <= 1e-6
    assert want.sparse[2] and len(want.sparse[2]) < want.tokens[2] - 2  # "hello" twice: one id, its max weight


def test_m3_base64_and_one_output(outputs_server: RunningServer, m3: Reranker) -> None:
    want = embed_outputs(m3, TEXTS[:2], output=("multi_vector",)).multi_vector
    assert want is not None
    asked = {"model": "m3", "input": TEXTS[:2], "outputs": ["multi_vector"], "encoding_format": "base64"}
    body = _post(outputs_server, asked)
    for item, multi in zip(body["data"], want, strict=True):
        assert set(item) == {"object", "index", "multi_vector"}  # no dense asked: no `embedding`
        rows = np.array([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in item["multi_vector"]])
        assert np.abs(rows - multi).max() <= 1e-6
    sparse = _post(outputs_server, {"model": "m3", "input": TEXTS[0], "outputs": ["sparse"]})["data"][0]
    assert set(sparse) == {"object", "index", "sparse"}


def test_without_outputs_the_openai_response(outputs_server: RunningServer, m3: Reranker, minilm: Reranker) -> None:
    dense = embed_outputs(m3, TEXTS, output=("dense",)).dense
    body = _post(outputs_server, {"model": "m3", "input": TEXTS})
    assert all(set(item) == {"object", "index", "embedding"} for item in body["data"])
    assert np.abs(np.array([item["embedding"] for item in body["data"]]) - dense).max() <= 1e-6
    plain = _post(outputs_server, {"input": TEXTS})  # no model: the first embedding model, as before
    assert plain["model"] == "minilm" and set(plain) == {"object", "data", "model", "usage"}
    assert all(set(item) == {"object", "index", "embedding"} for item in plain["data"])
    assert np.abs(np.array([item["embedding"] for item in plain["data"]]) - minilm.embed(TEXTS)).max() < 1e-5


def test_without_model_the_first_that_gives_the_outputs(outputs_server: RunningServer) -> None:
    assert _post(outputs_server, {"input": TEXTS[0], "outputs": ["sparse"]})["model"] == "m3"


def test_colbert_multi_vectors(outputs_server: RunningServer, colbert: Reranker) -> None:
    want = embed_outputs(colbert, TEXTS, output=("multi_vector",)).multi_vector
    assert want is not None
    body = _post(outputs_server, {"model": "colbert", "input": TEXTS, "outputs": ["multi_vector"]})
    for item, multi in zip(body["data"], want, strict=True):
        assert np.abs(np.array(item["multi_vector"]) - multi).max() <= 1e-6


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "minilm", "outputs": ["sparse"]}, "outputs", "minilm (bi-encoder) gives outputs ['dense']"),
        ({"model": "colbert", "outputs": ["dense", "sparse"]}, "outputs", "not ['dense', 'sparse']"),
        ({"model": "colbert"}, "model", 'gives outputs [\'multi_vector\'], not [\'dense\'] (ask "outputs"'),
        ({"model": "tiny", "outputs": ["multi_vector"]}, "model", "/v1/embeddings needs an embedding model"),
    ],
)  # fmt: skip
def test_models_without_the_outputs_get_a_400(
    outputs_server: RunningServer, body: dict, param: str, message: str
) -> None:
    with outputs_server.client() as client:
        error = error_of(client.post("/v1/embeddings", json={"input": TEXTS, **body}), 400)
    assert message in error.message
    assert error.error.type == "invalid_request_error" and error.error.param == param


def test_unknown_output_is_a_422(outputs_server: RunningServer) -> None:
    with outputs_server.client() as client:
        for outputs in (["pooled"], []):
            response = client.post("/v1/embeddings", json={"model": "m3", "input": "x", "outputs": outputs})
            assert response.status_code == 422, response.text


def test_openapi_lists_what_every_embedding_model_gives(
    tmp_path: Path, m3: Reranker, colbert: Reranker, minilm: Reranker
) -> None:
    def described(models: dict[str, Reranker]) -> dict:
        with serve(Settings(cache="none"), models) as running, running.client() as client:
            request = client.get("/openapi.json").json()["components"]["schemas"]["EmbeddingRequest"]
        return dict(request["properties"])

    def enum(properties: dict) -> object:
        return next(o["items"] for o in properties["outputs"]["anyOf"] if o.get("type") == "array").get("enum")

    alone = described({"m3": m3, "colbert": colbert})
    assert enum(alone) == ["multi_vector"] and alone["model"]["anyOf"][0]["enum"] == ["m3", "colbert"]
    assert enum(described({"m3": m3})) == list(ALL)
    assert enum(described({"minilm": minilm, "m3": m3})) == ["dense"]


def test_openai_sdk_with_extra_body(outputs_server: RunningServer, m3: Reranker) -> None:
    import openai

    client = openai.OpenAI(api_key="unused", base_url=f"{outputs_server.url}/v1")
    want = embed_outputs(m3, TEXTS, output=("dense", "sparse"))
    assert want.dense is not None and want.sparse is not None
    # the SDK asks for base64 by default and decodes `embedding`; the extra outputs arrive in model_extra
    got = client.embeddings.create(model="m3", input=TEXTS, extra_body={"outputs": ["dense", "sparse"]})
    assert np.abs(np.array([d.embedding for d in got.data]) - want.dense).max() <= 1e-6
    for item, sparse in zip(got.data, want.sparse, strict=True):
        assert item.model_extra is not None and item.model_extra["sparse"]["indices"] == sorted(sparse)
