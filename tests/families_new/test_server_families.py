"""The four families of issue 18 through the real app (uvicorn on 127.0.0.1, tests/server/conftest.py): Cohere
/v1/rerank gives the library's scores and order, and rerankd's per-request family options (cutoff_layers,
compress_ratio, compress_layers, score_weights) change the scores exactly as the library's ScoreOptions do; a family
that does not take an option, or a value the model cannot use, is a typed 4xx naming what to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from rerankd import Reranker
from rerankd.errors import InvalidInput
from rerankd.jobs import ScoreOptions, primary_score, ranking
from rerankd.server import schemas as s
from rerankd.server.cache import MemoryCache
from rerankd.settings import Settings, explain
from rerankd.validation import check_pairs
from tests.server.conftest import RunningServer, serve
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
FIXTURES = {"lw": "lightweight_path", "m3": "m3_path", "mxbai": "mxbai_path", "colbert": "colbert_path"}
FAMILIES = {"lw": "bge-gemma2-lightweight", "m3": "bge-m3", "mxbai": "mxbai-rerank-v2", "colbert": "colbert"}
COMPRESS = {"compress_ratio": 2, "compress_layers": [2, 4]}
EXTENSIONS = ("cutoff_layers", "compress_ratio", "compress_layers", "score_weights")


def _docs() -> list[str]:
    return corpus(seed=3, n=8, min_words=3, max_words=40) + corpus(seed=4, n=2, min_words=60, max_words=90)


def _load(path: Path, **options: Any) -> Reranker:
    return Reranker.from_pretrained(str(path), device="cpu", dtype="float32", **options)


def _library(reranker: Reranker, **options: Any) -> list[float]:
    """The library's scores of (QUERY, doc) under per-call ScoreOptions (what a request's fields become)."""
    pairs = check_pairs([(QUERY, d) for d in _docs()])
    return [primary_score(row) for row in reranker.rows(pairs, ScoreOptions(**options))]


@pytest.fixture(scope="module")
def rerankers(request: pytest.FixtureRequest) -> dict[str, Reranker]:
    return {name: _load(request.getfixturevalue(fixture)) for name, fixture in FIXTURES.items()}


@pytest.fixture(scope="module")
def server(rerankers: dict[str, Reranker]) -> Iterator[RunningServer]:
    with serve(Settings(cache="none"), rerankers) as running:
        yield running


def _rerank(server: RunningServer, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "query": QUERY, "documents": _docs(), "return_documents": False, **fields}
    with server.client() as client:
        return client.post("/v1/rerank", json=body)


def _scores(response: httpx.Response) -> tuple[list[float], list[int]]:
    """Scores in document order and the served order of a /v1/rerank answer (validated with its schema)."""
    assert response.status_code == 200, response.text
    body = s.RerankResponse.model_validate(response.json())
    scores = [0.0] * len(_docs())
    for result in body.results:
        scores[result.index] = result.relevance_score
    return scores, [result.index for result in body.results]


def _same(got: list[float], want: list[float]) -> None:
    assert np.allclose(got, want, atol=1e-5, rtol=0), (got, want)


@pytest.mark.parametrize("model", list(FIXTURES))
def test_rerank_gives_the_library_scores_and_order(server: RunningServer, rerankers: dict[str, Reranker], model: str):
    reranker = rerankers[model]
    assert reranker.info.family == FAMILIES[model]
    want = reranker.score([(QUERY, d) for d in _docs()])
    got, order = _scores(_rerank(server, model))
    _same(got, want)
    assert order == ranking(want)
    assert order == [r.index for r in reranker.rank(QUERY, _docs())]


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        pytest.param("lw", COMPRESS, id="lw-compress"),
        pytest.param("lw", {"cutoff_layers": [4]}, id="lw-cutoff"),
        pytest.param("lw", {"cutoff_layers": [3, 5], **COMPRESS}, id="lw-cutoffs-compress"),
        pytest.param("m3", {"score_weights": [1, 0, 0]}, id="m3-dense"),
        pytest.param("m3", {"score_weights": [0.4, 0.2, 0.4]}, id="m3-mixed"),
    ],
)
def test_per_request_options_change_scores_as_the_library(
    server: RunningServer, rerankers: dict[str, Reranker], model: str, fields: dict[str, Any]
) -> None:
    options = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
    want = _library(rerankers[model], **options)
    default = _library(rerankers[model])
    assert np.abs(np.array(want) - np.array(default)).max() > 1e-4, "the option must matter on this model"
    got, order = _scores(_rerank(server, model, **fields))
    _same(got, want)
    assert order == ranking(want)


def test_vllm_score_takes_the_same_options(server: RunningServer, rerankers: dict[str, Reranker]) -> None:
    want = _library(rerankers["lw"], cutoff_layers=(5,), compress_ratio=2, compress_layers=(2, 4))
    body = {"model": "lw", "text_1": QUERY, "text_2": _docs(), "cutoff_layers": [5], **COMPRESS}
    with server.client() as client:
        response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    _same([d.score for d in s.ScoreResponse.model_validate(response.json()).data], want)


@pytest.mark.parametrize(
    ("model", "fields", "takers"),
    [
        ("m3", {"compress_ratio": 2}, "bge-gemma2-lightweight"),
        ("colbert", {"compress_layers": [2]}, "bge-gemma2-lightweight"),
        ("lw", {"score_weights": [1, 0, 0]}, "bge-m3"),
        ("mxbai", {"cutoff_layers": [2]}, "bge-gemma2-lightweight"),
    ],
)
def test_an_option_of_another_family_is_a_400_naming_its_families(
    server: RunningServer, model: str, fields: dict[str, Any], takers: str
) -> None:
    response = _rerank(server, model, **fields)
    assert response.status_code == 400, response.text
    error = s.ErrorResponse.model_validate(response.json()).error
    option = next(iter(fields))
    assert error.param == option
    assert f"{option} is not an option of {FAMILIES[model]} models" in error.message
    assert takers in error.message and "leave it out" in error.message


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"cutoff_layers": [9]}, 400, "this model scores layers [2, 3, 4, 5, 6]"),
        ({"compress_ratio": 2, "compress_layers": [6]}, 400, "compression runs before layers 1..5"),
        ({"compress_ratio": 3}, 422, "compress_ratio must be one of 1, 2, 4, 8"),
        ({"compress_ratio": True}, 422, "compress_ratio"),
        ({"cutoff_layers": []}, 422, "cutoff_layers"),
    ],
)
def test_lightweight_values_out_of_range(server: RunningServer, fields: dict[str, Any], status: int, words: str):
    response = _rerank(server, "lw", **fields)
    assert response.status_code == status, response.text
    assert words in response.text


@pytest.mark.parametrize(
    ("weights", "status"),
    [([0, 0, 0], 400), ([1e308, 1e308, 1], 400), ([1, 2], 422), ([1, -1, 1], 422), ([1, True, 1], 422)],
)
def test_m3_weights_out_of_range(server: RunningServer, weights: list[Any], status: int) -> None:
    response = _rerank(server, "m3", score_weights=weights)
    assert response.status_code == status, response.text
    assert "score_weights" in response.text


def test_cohere_v2_keeps_refusing_unknown_fields(server: RunningServer) -> None:
    """Cohere v2's body stays exactly Cohere's (422 on anything else); the extensions live on /v1/rerank and /score."""
    with server.client() as client:
        response = client.post("/v2/rerank", json={"model": "lw", "query": QUERY, "documents": ["a"], **COMPRESS})
    assert response.status_code == 422, response.text


def test_openapi_describes_the_extensions(server: RunningServer) -> None:
    with server.client() as client:
        components = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("RerankRequest", "ScoreRequest"):
        properties = components[name]["properties"]
        for field in EXTENSIONS:
            assert "rerankd:" in str(properties[field]), (name, field)
            assert field not in components[name].get("required", [])
        assert {"enum": [1, 2, 4, 8]}.items() <= properties["compress_ratio"]["anyOf"][0].items()
    assert not set(EXTENSIONS) & set(components["V2RerankRequest"]["properties"])


# ------------------------------------------------------------------------------------- cache and served options
def test_per_request_options_are_part_of_the_cache_key(lightweight_path: Path) -> None:
    reranker = _load(lightweight_path)
    with serve(Settings(cache="memory"), {"lw": reranker}) as server:
        plain, _ = _scores(_rerank(server, "lw"))
        compressed, _ = _scores(_rerank(server, "lw", **COMPRESS))
        again, _ = _scores(_rerank(server, "lw", compress_ratio=2, compress_layers=[4, 2, 4]))  # same meaning
        assert server.metric("rerankd_cache_hits_total", model="lw") == len(_docs())
    _same(plain, _library(reranker))
    _same(compressed, _library(reranker, compress_ratio=2, compress_layers=(2, 4)))
    assert again == compressed


def test_one_model_served_with_two_sets_of_options_shares_no_cache_entries(lightweight_path: Path) -> None:
    """The served model's load-time family options are part of its cache fingerprint (a shared Redis cache across
    replicas with different --model options would otherwise mix their scores)."""
    plain, compressed = _load(lightweight_path), _load(lightweight_path, compress_ratio=2, compress_layers=(2, 4))
    shared = MemoryCache(max_entries=1000)
    with serve(Settings(cache="memory"), {"plain": plain, "compressed": compressed}, score_cache=shared) as server:
        first, _ = _scores(_rerank(server, "plain"))
        second, _ = _scores(_rerank(server, "compressed"))
    _same(first, plain.score([(QUERY, d) for d in _docs()]))
    _same(second, compressed.score([(QUERY, d) for d in _docs()]))
    assert np.abs(np.array(first) - np.array(second)).max() > 1e-4


def test_serve_model_options_load_each_model_with_its_own(lightweight_path: Path, m3_path: Path) -> None:
    """`rerankd serve -m 'name=path;KEY=VALUE;...'`: the server loads each model itself, with its own options."""
    models = (f"lwc={lightweight_path};compress_ratio=2;compress_layers=2+4;cutoff_layers=5", f"m3d={m3_path}")
    settings = Settings(
        cache="none", device="cpu", dtype="float32", models=(*models, f"m3w={m3_path};score_weights=1,0,0")
    )
    with serve(settings) as server:
        lwc, _ = _scores(_rerank(server, "lwc"))
        m3w, _ = _scores(_rerank(server, "m3w"))
        m3_default, _ = _scores(_rerank(server, "m3d"))
        per_request, _ = _scores(_rerank(server, "m3d", score_weights=[1, 0, 0]))
        overridden, _ = _scores(_rerank(server, "lwc", compress_ratio=1))  # a request's option wins
    lw_options = {"compress_ratio": 2, "compress_layers": (2, 4), "cutoff_layers": (5,)}
    _same(lwc, _load(lightweight_path, **lw_options).score([(QUERY, d) for d in _docs()]))
    _same(overridden, _library(_load(lightweight_path, cutoff_layers=(5,))))
    _same(m3w, _load(m3_path, score_weights=(1, 0, 0)).score([(QUERY, d) for d in _docs()]))
    _same(m3w, per_request)
    assert np.abs(np.array(m3w) - np.array(m3_default)).max() > 1e-4


def test_a_served_option_of_another_family_fails_the_load(m3_path: Path) -> None:
    settings = Settings(cache="none", device="cpu", models=(f"m3={m3_path};compress_ratio=2",))
    with serve(settings, wait_ready=False) as server:
        deadline = time.monotonic() + 60
        while "failed" not in (ready := httpx.get(server.url + "/ready", timeout=10)).text:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.05)
        assert ready.status_code == 503
    with pytest.raises(InvalidInput, match="compress_ratio is not an option of bge-m3 models"):
        _load(m3_path, compress_ratio=2)


# ---------------------------------------------------------------------------------------------- --model options
def test_model_specs_split_name_path_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_MODELS", "lw=/m/lw;compress_ratio=4;compress_layers=8+16, m3=/m/m3;score_weights=1+0+0")
    settings = Settings()
    assert settings.served_models() == [("lw", "/m/lw"), ("m3", "/m/m3")]
    assert settings.model_options("lw") == {"compress_ratio": 4, "compress_layers": (8, 16)}
    assert settings.model_options("m3") == {"score_weights": (1.0, 0.0, 0.0)}
    assert settings.load_options("lw").model.compress_layers == (8, 16)
    assert settings.load_options("m3").model.score_weights == (1.0, 0.0, 0.0)
    assert settings.load_options().model.compress_ratio is None
    plain = Settings(models=("/m/plain", "x=/m/x;cutoff-layers=12"))
    assert plain.served_models() == [("/m/plain", "/m/plain"), ("x", "/m/x")]
    assert plain.model_options("x") == {"cutoff_layers": (12,)} and plain.model_options("/m/plain") == {}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("lw=/m/lw;ratio=2", "'ratio=2' is not KEY=VALUE with a KEY of cutoff_layers, compress_ratio"),
        ("lw=/m/lw;compress_ratio", "is not KEY=VALUE"),
        ("lw=/m/lw;compress_layers=8,x", "compress_layers='8,x': '8,x' is not a list of layer numbers"),
        ("lw=/m/lw;compress_ratio=two", "compress_ratio='two'"),
        ("m3=/m/m3;score_weights=", "give the weights"),
    ],
)
def test_bad_model_options_fail_at_settings_naming_flag_and_key(spec: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(models=(spec,))
    message = explain(caught.value)
    assert "invalid --model" in message and "RERANKD_MODELS" in message and words in message, message
