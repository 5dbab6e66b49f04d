"""Contract tests: the Elasticsearch and OpenSearch retrievers, through the official clients, against a local
stand-in answering ``_search`` with each engine's documented bodies (requests recorded and checked). With
RERANKD_TEST_ELASTICSEARCH_URL / RERANKD_TEST_OPENSEARCH_URL set, the last tests run against a real cluster
(docs/search.md has the commands)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rerankd.errors import InvalidInput, NotReady
from rerankd.pipeline import Pipeline
from rerankd.pipeline.remote import (
    ElasticsearchRetriever,
    FieldMapping,
    FirstStageUnavailable,
    OpenSearchRetriever,
)
from tests.pipeline.conftest import ROWS
from tests.pipeline.engine_fixture import (
    CLUSTER_BLOCK,
    ES_INDEX_NOT_FOUND,
    FakeEngine,
    fake_engine,
    search_response,
)

pytestmark = pytest.mark.contract
FLAVORS = ["elasticsearch", "opensearch"]
PANDAS = search_response(
    [
        ("d01", 7.5, {"title": "Giant panda", "text": "The giant panda eats bamboo.", "lang": "en", "year": 2001}),
        ("d02", 3.25, {"title": "Red panda", "text": "The red panda is small.", "lang": "en", "year": 2012}),
        ("d99", 1.0, {"title": "No text field"}),
    ]
)


def connect(flavor: str, url: str, **options: Any) -> ElasticsearchRetriever | OpenSearchRetriever:
    if flavor == "elasticsearch":
        return ElasticsearchRetriever.connect(url, "docs", max_retries=0, **options)
    auth = options.pop("basic_auth", None)
    return OpenSearchRetriever.connect(url, "docs", http_auth=auth, max_retries=0, **options)


@pytest.fixture(params=FLAVORS)
def engine(request: pytest.FixtureRequest) -> Iterator[FakeEngine]:
    with fake_engine(request.param) as running:
        yield running


def test_query_string_becomes_multi_match_and_hits_become_candidates(engine: FakeEngine) -> None:
    engine.answer(PANDAS)
    retriever = connect(engine.flavor, engine.url, basic_auth=("elastic", "changeme"))
    hits = retriever.retrieve("panda", k=3, filters={"lang": "en", "year": {"gte": 2000}})
    sent = engine.requests[-1]
    assert (sent.method, sent.path.split("?")[0]) == ("POST", "/docs/_search")
    assert sent.body == {
        "query": {
            "bool": {
                "must": [{"multi_match": {"query": "panda", "fields": ["text", "title"]}}],
                "filter": [{"term": {"lang": "en"}}, {"range": {"year": {"gte": 2000}}}],
            }
        },
        "size": 3,
    }
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"elastic:changeme").decode()
    assert [(h.id, h.score, h.rank) for h in hits] == [("d01", 7.5, 1), ("d02", 3.25, 2)]  # d99: no text, left out
    assert hits[0].document.title == "Giant panda"
    assert hits[0].document.metadata == {"lang": "en", "year": 2001}


def test_full_query_dsl_and_field_mapping_on_the_documented_response(engine: FakeEngine) -> None:
    from tests.pipeline.engine_fixture import ES_SEARCH_RESPONSE

    engine.answer(ES_SEARCH_RESPONSE)
    dsl = {"bool": {"should": [{"match": {"message": "{{query}}"}}, {"term": {"user.id": "kimchy"}}]}}
    fields = FieldMapping(id="user.id", title=None, text="message", metadata="http", filter_prefix="labels.")
    retriever = connect(engine.flavor, engine.url, query_dsl=dsl, fields=fields)
    hits = retriever.retrieve("GET search", k=10, filters={"env": ["prod", "staging"]})
    assert engine.requests[-1].body["query"] == {
        "bool": {
            "must": [{"bool": {"should": [{"match": {"message": "GET search"}}, {"term": {"user.id": "kimchy"}}]}}],
            "filter": [{"terms": {"labels.env": ["prod", "staging"]}}],
        }
    }
    assert [(h.id, h.score) for h in hits] == [("kimchy", pytest.approx(1.3862942))]
    assert hits[0].document.text == "GET /search HTTP/1.1 200 1070000"
    assert hits[0].document.metadata["response"]["status_code"] == 200
    assert dsl["bool"]["should"][0]["match"]["message"] == "{{query}}"  # the caller's DSL is not mutated


def test_api_key_header_for_elasticsearch() -> None:
    with fake_engine("elasticsearch") as engine:
        engine.answer(PANDAS)
        connect("elasticsearch", engine.url, api_key="c2VjcmV0").retrieve("panda")
        assert engine.requests[-1].headers["authorization"] == "ApiKey c2VjcmV0"


def test_missing_index_is_a_400_with_the_engines_reason(engine: FakeEngine) -> None:
    engine.answer(ES_INDEX_NOT_FOUND, status=404)
    with pytest.raises(InvalidInput, match=r"rejected the search on 'docs' \(404\): index_not_found_exception"):
        connect(engine.flavor, engine.url).retrieve("panda")


def test_cluster_errors_and_timeouts_are_503(engine: FakeEngine) -> None:
    engine.answer(CLUSTER_BLOCK, status=503)
    with pytest.raises(FirstStageUnavailable, match="unavailable") as caught:
        connect(engine.flavor, engine.url).retrieve("panda")
    assert isinstance(caught.value, NotReady) and caught.value.code == "first_stage_unavailable"
    engine.answer(PANDAS, delay_s=1.5)
    with pytest.raises(FirstStageUnavailable):
        connect(engine.flavor, engine.url, timeout_s=0.3).retrieve("panda")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_cluster_that_is_down_is_503(flavor: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(FirstStageUnavailable, match="unavailable"):
        connect(flavor, f"http://127.0.0.1:{port}").retrieve("panda")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return str(cert_file), str(key_file)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_tls_with_a_ca_file_and_refused_without(flavor: str, certificate: tuple[str, str]) -> None:
    with fake_engine(flavor, certificate) as engine:
        engine.answer(PANDAS)
        hits = connect(flavor, engine.url, ca_certs=certificate[0]).retrieve("panda", k=2)
        assert [h.id for h in hits] == ["d01", "d02"]
        with pytest.raises(FirstStageUnavailable):
            connect(flavor, engine.url).retrieve("panda")  # the system CAs do not trust it


def test_pipeline_reranks_elasticsearch_candidates(bert_ce: Path) -> None:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    with fake_engine("elasticsearch") as engine:
        engine.answer(PANDAS)
        results = Pipeline(connect("elasticsearch", engine.url), reranker).search("panda", k=3, top_n=2)
    expected = reranker.score([("panda", "Giant panda The giant panda eats bamboo."),
                               ("panda", "Red panda The red panda is small.")])  # fmt: skip
    assert {h.id: h.score for h in results.hits} == {
        "d01": pytest.approx(expected[0], abs=1e-6),
        "d02": pytest.approx(expected[1], abs=1e-6),
    }
    assert results.retriever == "elasticsearch"


# ---------------------------------------------------------------------------------------------- a real cluster
def _real(flavor: str) -> str:
    url = os.environ.get(f"RERANKD_TEST_{flavor.upper()}_URL")
    if not url:
        pytest.skip(f"set RERANKD_TEST_{flavor.upper()}_URL to run against a real {flavor} cluster")
    return url


@pytest.mark.parametrize("flavor", FLAVORS)
def test_against_a_real_cluster(flavor: str) -> None:
    url = _real(flavor)
    retriever = connect(flavor, url, verify_certs=os.environ.get("RERANKD_TEST_VERIFY_CERTS", "1") == "1")
    client, index = retriever.client, "rerankd-contract-test"
    if client.indices.exists(index=index):
        client.indices.delete(index=index)
    mappings = {"properties": {"title": {"type": "text"}, "text": {"type": "text"}, "lang": {"type": "keyword"},
                               "year": {"type": "integer"}, "tags": {"type": "keyword"}}}  # fmt: skip
    if flavor == "elasticsearch":
        client.indices.create(index=index, mappings=mappings)
    else:
        client.indices.create(index=index, body={"mappings": mappings})
    try:
        for row in ROWS:
            source = {"title": row["title"], "text": row["text"], **row["metadata"]}
            client.index(index=index, id=row["id"], body=source, refresh=True)
        retriever.index = index
        hits = retriever.retrieve("giant panda bamboo", k=3)
        assert hits[0].id == "d01" and hits[0].document.metadata["lang"] == "en"
        assert [h.id for h in retriever.retrieve("panda", k=10, filters={"lang": "fr"})] == ["d09"]
        assert {h.id for h in retriever.retrieve("city", k=10, filters={"year": {"gte": 2016}})} == {"d04", "d05"}
    finally:
        client.indices.delete(index=index)
