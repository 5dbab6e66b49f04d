"""``deterministic=True`` (issue 20 item 4): a pair's score does not depend on what it is batched with, bit for
bit, in bfloat16 as in float32, in the library and in a server that batches concurrent requests together.

Without it, batching pads short inputs to the batch's longest, and the attention kernel's blocked reductions over
the padded keys round differently: on the real all-MiniLM-L6-v2 in bf16, "hi" moves by ~1e-3 with its batch
(fp32 by ~1e-7), which is the size of bf16's own error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from rerankd import Reranker
from tests.server.conftest import ServerFactory

QUERY = "what is panda?"
DOCUMENTS = [
    "hi",
    "The giant panda is a bear species endemic to China, living in bamboo forests and eating mostly bamboo shoots.",
    "Pandas is a Python library",
    "panda",
    "a much longer text about many things, " * 6,
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_scores_do_not_depend_on_the_batch(minilm_path: Path, dtype: str) -> None:
    model = Reranker.from_pretrained(minilm_path, dtype=dtype, deterministic=True)
    assert model.info.deterministic and model.budget.max_batch_size == 1
    together = model.score([(QUERY, d) for d in DOCUMENTS])
    alone = [model.score([(QUERY, d)])[0] for d in DOCUMENTS]
    reversed_order = model.score([(QUERY, d) for d in reversed(DOCUMENTS)])[::-1]
    assert together == alone == reversed_order


def test_without_it_padding_moves_bf16_scores(minilm_path: Path) -> None:
    """The effect the option removes is real here (else the test above would prove nothing)."""
    model = Reranker.from_pretrained(minilm_path, dtype="bfloat16")
    together = model.score([(QUERY, d) for d in DOCUMENTS])
    alone = [model.score([(QUERY, d)])[0] for d in DOCUMENTS]
    assert together != alone
    assert max(abs(a - b) for a, b in zip(together, alone, strict=True)) < 5e-3


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_server_gives_every_request_its_alone_scores(
    start_server: ServerFactory, minilm_path: Path, deterministic: bool
) -> None:
    """Concurrent requests share forward passes; with the option each pair still gets its alone score exactly
    (without it, the same check fails: the test can tell)."""
    model = Reranker.from_pretrained(minilm_path, dtype="bfloat16", deterministic=deterministic)
    server = start_server({"tiny": model})
    requests = [{"query": QUERY, "documents": DOCUMENTS[i:] + DOCUMENTS[:i]} for i in range(len(DOCUMENTS))]

    async def clients() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/rerank", json=body) for body in requests * 3))
        assert all(r.status_code == 200 for r in responses)
        return [r.json() for r in responses]

    alone = {d: model.score([(QUERY, d)])[0] for d in DOCUMENTS}
    served = [
        (result["relevance_score"], alone[body["documents"][result["index"]]])
        for body, answer in zip(requests * 3, asyncio.run(clients()), strict=True)
        for result in answer["results"]
    ]
    assert all(got == want for got, want in served) is deterministic


def test_settings_and_cli_reach_the_load_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from rerankd.cli import app
    from rerankd.settings import Settings

    monkeypatch.setenv("RERANKD_DETERMINISTIC", "1")
    assert Settings().load_options().deterministic
    monkeypatch.delenv("RERANKD_DETERMINISTIC")
    assert not Settings().load_options().deterministic
    for command in ("serve", "rank"):
        assert "--deterministic" in CliRunner().invoke(app, [command, "--help"]).output
