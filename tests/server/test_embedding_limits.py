"""The /v1/embeddings input cap: OpenAI accepts up to 2,048 inputs per request, and so does rerankd (the default of
--max-embedding-inputs); one more is a 413 in OpenAI's error shape, refused before anything is tokenised."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from rerankd import Reranker
from rerankd.server import schemas as s
from tests.server.conftest import ServerFactory
from tests.tiny_models import corpus

pytestmark = pytest.mark.timeout(90)

OPENAI_LIMIT = 2048


@pytest.fixture(scope="module")
def tiny_embedder(bert_ce: Path, tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    """The tiny BERT's encoder as a sentence-transformers bi-encoder (mean pooling, 32 dimensions)."""
    folder = tmp_path_factory.mktemp("tiny-bi-encoder")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bert_ce / name, folder / name)
    config = json.loads((bert_ce / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    weights = load_file(str(bert_ce / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k.startswith("bert.")}, str(folder / "model.safetensors"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": config["hidden_size"], "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    model = Reranker.from_pretrained(str(folder), device="cpu", dtype="float32")
    assert model.is_embedder
    return model


def test_2048_inputs_are_accepted_and_2049_are_a_413_in_openai_shape(
    start_server: ServerFactory, tiny_embedder: Reranker
) -> None:
    server = start_server({"emb": tiny_embedder})
    texts = corpus(seed=61, n=OPENAI_LIMIT + 1, min_words=2, max_words=8)
    with server.client(timeout=60) as client:
        full = client.post("/v1/embeddings", json={"model": "emb", "input": texts[:OPENAI_LIMIT]})
        over = client.post("/v1/embeddings", json={"model": "emb", "input": texts})
        over_ids = client.post("/v1/embeddings", json={"model": "emb", "input": [[5, 6]] * (OPENAI_LIMIT + 1)})
    assert full.status_code == 200, full.text[:500]
    data = full.json()["data"]
    assert [item["index"] for item in data] == list(range(OPENAI_LIMIT))
    assert data[-1]["embedding"] == pytest.approx(tiny_embedder.embed([texts[OPENAI_LIMIT - 1]])[0].tolist(), abs=1e-5)
    for answer in (over, over_ids):
        assert answer.status_code == 413, answer.text[:500]
        error = s.ErrorResponse.model_validate(answer.json()).error  # OpenAI's {"error": {message, type, param, code}}
        assert set(answer.json()["error"]) >= {"message", "type", "param", "code"}
        assert error.type == "invalid_request_error" and error.param == "input"
        assert error.message == f"too many inputs: {OPENAI_LIMIT + 1}, the limit is {OPENAI_LIMIT} per request"
    assert server.metric("rerankd_scored_pairs_total", model="emb") == OPENAI_LIMIT  # the refused ones: nothing
