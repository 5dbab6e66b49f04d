"""The state that a Ray Serve application's replicas share (rerankd.distributed.app_state), without a cluster: the
AppState actor's class called in-process, real FastAPI apps as replicas. Admin changes run in log order, failed
ones are not logged, a replica started later replays the log, feedback outcomes reach every other replica once."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rerankd import Reranker
from rerankd.distributed.app_state import SECRET_FIELDS, AppState, ReplicaSync, check_secrets, split_secrets
from rerankd.distributed.forwarding import SEQUENCE_HEADER, ForwardedRequest, ForwardedResponse
from rerankd.server import create_app
from rerankd.server.admin.feedback import Outcome, Served
from rerankd.settings import Settings

ADMIN = "admin-key-for-the-log"


class Local:
    """An object called the way its Ray actor handle is: ``handle.method.remote(...)`` gives an awaitable."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self.target, name))


class FirstReplica:
    """The scoring deployment as the log sees it, routing every change to one replica."""

    def __init__(self, sync: ReplicaSync) -> None:
        self.sync = sync

    async def forward(self, request: ForwardedRequest) -> ForwardedResponse:
        sequence = request.header(SEQUENCE_HEADER)
        assert sequence is not None
        return await self.sync.apply(request, int(sequence))


def admin_request(method: str, path: str, body: dict[str, Any]) -> ForwardedRequest:
    headers = ((b"content-type", b"application/json"), (b"authorization", f"Bearer {ADMIN}".encode()))
    return ForwardedRequest(method, path, b"", headers, json.dumps(body).encode())


def routes_of(sync: ReplicaSync) -> dict[str, list[tuple[str, float]]]:
    return dict(sync.app.state.engine.routes)


def test_credentials_are_split_from_the_deployment_args() -> None:
    fields = Settings(api_key=("k",), cache="redis://:pw@host:6379/0", device="cpu").model_dump(mode="json")
    public, secret = split_secrets(fields)
    assert set(secret) == SECRET_FIELDS and not SECRET_FIELDS & set(public)
    assert "pw" not in json.dumps(public) and "device" in public


def test_a_replica_fails_closed_when_the_handed_over_credentials_are_gone() -> None:
    """A state actor recreated empty (its node died) must not let a new router or replica serve keyless."""
    assert check_secrets({"api_key": ["k"]}, ["api_key"], "app-state-x") == {"api_key": ["k"]}
    assert check_secrets({}, [], "app-state-x") == {}  # nothing was handed over: the replica's env decides
    with pytest.raises(RuntimeError, match=r"api_key, admin_key are gone .*app-state-x"):
        check_secrets({}, ["api_key", "admin_key"], "app-state-x")


def test_admin_log_feedback_and_a_late_replica(bert_ce: Path, xlmr_ce: Path) -> None:
    settings = Settings(routes=("ab=tiny:0,tiny-b:1",), admin_key=(ADMIN,), cache="none")
    rerankers = {
        name: Reranker.from_pretrained(str(path), device="cpu", dtype="float32")
        for name, path in (("tiny", bert_ce), ("tiny-b", xlmr_ce))
    }

    async def scenario() -> None:
        async with AsyncExitStack() as stack:

            async def replica(tag: str) -> ReplicaSync:
                app = create_app(settings, rerankers=rerankers)
                await stack.enter_async_context(app.router.lifespan_context(app))
                sync = ReplicaSync(app, Local(state), tag, ADMIN)
                await sync.sync()
                return sync

            state = AppState(built_at=1)
            a, b = await replica("a"), await replica("b")
            scorers = Local(FirstReplica(a))
            put = admin_request("PUT", "/admin/routes/ab", {"weights": {"tiny": 1, "tiny-b": 0}})
            assert (await state.apply(put, scorers)).status == 200
            assert routes_of(a)["ab"] == [("tiny", 1.0), ("tiny-b", 0.0)]
            assert routes_of(b)["ab"] == [("tiny", 0.0), ("tiny-b", 1.0)]  # not yet: it replays on its next sync
            bad = admin_request("PUT", "/admin/routes/ab", {"weights": {"nope": 1}})
            assert (await state.apply(bad, scorers)).status >= 400
            assert len(state.log) == 1  # a change that failed is not logged
            await b.sync()
            assert routes_of(b)["ab"] == [("tiny", 1.0), ("tiny-b", 0.0)]
            shadow = admin_request("PUT", "/admin/shadows/ab", {"candidate": "tiny-b", "fraction": 0.5})
            assert (await state.apply(shadow, scorers)).status == 200
            c = await replica("c")  # started later: replays the whole log before its first request
            assert routes_of(c)["ab"] == routes_of(a)["ab"]
            assert c.app.state.engine.traffic.as_dict()["shadows"] == a.app.state.engine.traffic.as_dict()["shadows"]
            assert c.applied == a.applied == 2

            served = Served("ab", "tiny", (0, 1, 2), 0.0)
            a.feedback.record(served, Outcome(mrr=1.0, ndcg=1.0, ctr=1.0, rank_lift=0.0))
            b.feedback.record(served, Outcome(mrr=0.5, ndcg=0.6, ctr=1.0, rank_lift=1.0))
            for sync in (a, b, c, a, b, c):
                await sync.sync()
            for sync in (a, b, c):
                report = sync.feedback.report("ab", 10)
                assert [(arm.arm, arm.events) for arm in report.arms] == [("tiny", 2)]
                assert report.arms[0].means["mrr"] == pytest.approx(0.75)

    asyncio.run(scenario())


def test_feedback_numbers_hold_when_the_oldest_outcomes_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.distributed import app_state

    monkeypatch.setattr(app_state, "MAX_EVENTS", 4)
    state, hit = AppState(built_at=1), Outcome(mrr=1.0, ndcg=1.0, ctr=1.0, rank_lift=0.0)

    async def scenario() -> None:
        assert await state.poll("a", 0, [("r", "x", hit)] * 3, 0) == ([], [], 3)
        changes, others, seen = await state.poll("b", 0, [("r", "y", hit)] * 3, 0)  # 6 > 4: the oldest 4 dropped
        assert (changes, others, seen) == ([], [], 6)
        _, others, seen = await state.poll("a", 0, [], 3)
        assert [arm for _, arm, _ in others] == ["y", "y"] and seen == 6  # b's first outcome was dropped
        assert (await state.poll("a", 0, [], 6))[1] == []  # nothing twice

    asyncio.run(scenario())
