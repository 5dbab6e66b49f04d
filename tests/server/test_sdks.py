"""The real client SDKs, unchanged except for their base URL: Cohere v1 and v2 rerank, OpenAI embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd import Reranker
from tests.server.conftest import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(60)

QUERY = "what is the giant panda bear of china?"
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello world"]


def test_cohere_v1_rerank(main_server: RunningServer, bert: Reranker) -> None:
    import cohere

    client = cohere.Client(api_key="unused", base_url=main_server.url)
    response = client.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    want = {r.index: r.score for r in bert.rank(QUERY, DOCS)}
    assert [r.index for r in response.results] == sorted(want, key=lambda i: -want[i])[:2]
    for result in response.results:
        assert result.relevance_score == pytest.approx(want[result.index], abs=1e-6)
        assert result.document is not None and result.document.text == DOCS[result.index]
    assert response.meta is not None and response.meta.billed_units is not None
    assert response.meta.billed_units.search_units == 1
    no_docs = client.rerank(model="tiny", query=QUERY, documents=DOCS, return_documents=False)
    assert all(r.document is None for r in no_docs.results)


def test_cohere_v1_object_documents_with_rank_fields(main_server: RunningServer) -> None:
    import cohere

    client = cohere.Client(api_key="unused", base_url=main_server.url)
    documents = [{"title": "panda", "text": DOCS[0]}, {"title": "city", "text": DOCS[1]}]
    response = client.rerank(model="tiny", query=QUERY, documents=documents, rank_fields=["title", "text"])
    assert sorted(r.index for r in response.results) == [0, 1]


def test_cohere_v2_rerank(main_server: RunningServer, bert: Reranker) -> None:
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=main_server.url)
    response = client.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=3, max_tokens_per_doc=512)
    want = {r.index: r.score for r in bert.rank(QUERY, DOCS)}
    assert [r.index for r in response.results] == sorted(want, key=lambda i: -want[i])
    assert [r.relevance_score for r in response.results] == pytest.approx(sorted(want.values(), reverse=True))
    assert response.meta is not None and response.meta.tokens is not None
    assert response.meta.tokens.input_tokens == sum(bert.count_tokens(QUERY, DOCS))


def test_cohere_sdk_errors_are_typed(main_server: RunningServer) -> None:
    import cohere
    from cohere.errors import BadRequestError, NotFoundError

    client = cohere.ClientV2(api_key="unused", base_url=main_server.url)
    with pytest.raises(NotFoundError) as missing:
        client.rerank(model="no-such-model", query=QUERY, documents=DOCS)
    assert "no-such-model" in missing.value.body["message"]
    with pytest.raises(BadRequestError) as empty:
        client.rerank(model="tiny", query="", documents=DOCS)
    assert empty.value.body["message"] == "query must not be empty"


def test_openai_embeddings(main_server: RunningServer, minilm: Reranker) -> None:
    import openai

    client = openai.OpenAI(api_key="unused", base_url=f"{main_server.url}/v1")
    want = minilm.embed(DOCS)
    default = client.embeddings.create(model="minilm", input=DOCS)  # the SDK asks for base64 and decodes it
    floats = client.embeddings.create(model="minilm", input=DOCS, encoding_format="float")
    single = client.embeddings.create(model="minilm", input=DOCS[0], dimensions=16)
    assert np.abs(np.array([d.embedding for d in default.data]) - want).max() < 1e-5
    assert np.abs(np.array([d.embedding for d in floats.data]) - want).max() < 1e-5
    assert default.model == "minilm" and default.usage.prompt_tokens > len(DOCS)
    assert len(single.data[0].embedding) == 16
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tiny", input=DOCS)  # a cross-encoder has no embeddings


def test_sdks_send_their_api_key(start_server: ServerFactory, bert: Reranker, minilm: Reranker) -> None:
    import cohere
    import openai

    server = start_server({"tiny": bert, "minilm": minilm}, api_key=("sk-test-1", "sk-test-2"))
    assert cohere.Client(api_key="sk-test-2", base_url=server.url).rerank(query=QUERY, documents=DOCS).results
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model="tiny", query=QUERY, documents=DOCS)
    good = openai.OpenAI(api_key="sk-test-1", base_url=f"{server.url}/v1")
    assert good.embeddings.create(model="minilm", input="panda").data
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="nope", base_url=f"{server.url}/v1", max_retries=0).embeddings.create(
            model="minilm", input="panda"
        )
