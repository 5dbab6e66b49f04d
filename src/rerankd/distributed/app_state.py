"""What the replicas of one Ray Serve application share beyond their deployment args: secrets, admin changes and
feedback (``rerankd serve --ray``, :mod:`rerankd.distributed.serve`).

**Secrets** (API and admin keys, the first stage's credentials, Redis URLs that may carry a password:
:data:`SECRET_FIELDS`) never travel in a deployment's init args: Ray Serve checkpoints those into the cluster's
key-value store (and, with GCS fault tolerance, into that store's Redis), where whoever reads the cluster's state
reads them. The builder hands them instead, by a method call, to one actor per application (:class:`AppState`,
namespace ``rerankd``, detached, no CPU), which keeps them in its memory only; each router and scoring replica
asks it for them when it starts. Settings that a replica finds in its own ``RERANKD_*`` environment (a ``serve
run`` config, a RayService's container env from a Kubernetes Secret) are read there and need no actor round trip.

**Admin changes** (``PUT``/``DELETE`` of routes and shadows, ``POST``/``DELETE`` of models) reach every scoring
replica: the router passes each to :meth:`AppState.apply`, which runs them one at a time, each on one replica
and tagged with its sequence number, and appends the ones that succeeded to the application's admin log. Every
replica replays the entries it has not applied (:class:`ReplicaSync`) before it takes traffic and then every
:data:`SYNC_S` seconds, so all replicas — those autoscaling adds or that replace a dead one too — serve the same
routes within about a second. The log keeps method, path and body; a replay authenticates with the replica's own
admin key.

**Feedback** outcomes recorded on one replica are exchanged through the actor at the same pace, so ``GET
/admin/report`` on any replica covers the feedback every replica received.

Each build of the application (a ``serve.run``, a ``serve deploy``) has its own actor, named by a random token in
the deployment args; once the new build's router is up it stops the actors of the builds it replaced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

from rerankd.distributed.forwarding import SEQUENCE_HEADER, ForwardedRequest, ForwardedResponse, call_asgi
from rerankd.server.admin.feedback import FeedbackBook, Outcome, Served

logger = logging.getLogger(__name__)
NAMESPACE = "rerankd"
SYNC_S = 1.0
CHANGING = ("PUT", "POST", "DELETE")
MAX_EVENTS = 1_000_000  # feedback outcomes the actor keeps for replicas that have not fetched them yet

# Settings fields that may hold a credential: never deployment args (see the module's docstring).
SECRET_FIELDS = frozenset(
    {"api_key", "admin_key", "first_stage_api_key", "first_stage_auth", "first_stage_url", "cache", "feedback_store"}
)


def split_secrets(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``fields`` as (everything else, the secret fields that are set)."""
    public = {k: v for k, v in fields.items() if k not in SECRET_FIELDS}
    secret = {k: v for k, v in fields.items() if k in SECRET_FIELDS}
    return public, secret


def is_admin_change(request: ForwardedRequest) -> bool:
    return request.path.startswith("/admin/") and request.method in CHANGING


@dataclass(frozen=True)
class AdminChange:
    """An admin request as the log keeps it: no credentials."""

    method: str
    path: str
    query_string: bytes
    body: bytes

    @classmethod
    def of(cls, request: ForwardedRequest) -> AdminChange:
        return cls(request.method, request.path, request.query_string, request.body)

    def replay(self, sequence: int, admin_key: str) -> ForwardedRequest:
        headers = (
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {admin_key}".encode()),
            (SEQUENCE_HEADER, str(sequence).encode()),
            (b"x-request-id", f"admin-replay-{sequence}".encode()),
        )
        return ForwardedRequest(self.method, self.path, self.query_string, headers, self.body)


Event = tuple[str, str, str, Outcome]  # (replica, route, arm, outcome)


class AppState:
    """The Ray actor (one per build of an application): secrets, the admin log, feedback outcomes."""

    def __init__(self, built_at: int) -> None:
        self.built_at = built_at
        self.app_name: str | None = None
        self.secrets: dict[str, Any] = {}
        self.log: list[tuple[int, AdminChange]] = []
        self.events: list[Event] = []  # outcome number n is events[n - 1 - dropped]
        self.dropped = 0
        self.lock = asyncio.Lock()

    async def put_secrets(self, secrets: dict[str, Any]) -> None:
        self.secrets = dict(secrets)

    async def get_secrets(self) -> dict[str, Any]:
        return dict(self.secrets)

    async def claim(self, app_name: str) -> tuple[str, int]:
        """Name the application this build serves (the router's first act); (name, build time)."""
        self.app_name = self.app_name or app_name
        return self.app_name, self.built_at

    async def owner(self) -> tuple[str | None, int]:
        return self.app_name, self.built_at

    async def since(self, applied: int) -> list[tuple[int, AdminChange]]:
        return [(sequence, change) for sequence, change in self.log if sequence > applied]

    async def apply(self, request: ForwardedRequest, scorers: Any) -> ForwardedResponse:
        """Run one admin change on one scoring replica; log it if it succeeded. One change at a time."""
        async with self.lock:
            sequence = len(self.log) + 1
            tagged = ForwardedRequest(request.method, request.path, request.query_string,
                                      (*request.headers, (SEQUENCE_HEADER, str(sequence).encode())), request.body,
                                      request.client)  # fmt: skip
            response: ForwardedResponse = await scorers.forward.remote(tagged)
            if response.status < 300:
                self.log.append((sequence, AdminChange.of(request)))
            return response

    async def poll(
        self, replica: str, applied: int, new: list[tuple[str, str, Outcome]], seen: int
    ) -> tuple[list[tuple[int, AdminChange]], list[tuple[str, str, Outcome]], int]:
        """A replica's once-a-second call: the admin changes after ``applied``; ``replica``'s new feedback
        outcomes in, the others' added after ``seen`` out; the newest outcome's number."""
        self.events.extend((replica, route, arm, outcome) for route, arm, outcome in new)
        if len(self.events) > MAX_EVENTS:  # the oldest half goes: a replica that far behind loses those
            drop = len(self.events) - MAX_EVENTS // 2
            del self.events[:drop]
            self.dropped += drop
        others = [(route, arm, o) for origin, route, arm, o in self.events[max(0, seen - self.dropped) :]
                  if origin != replica]  # fmt: skip
        return await self.since(applied), others, self.dropped + len(self.events)


PREFIX = "app-state-"


def new_build() -> tuple[str, int]:
    """A build's state actor name (random) and build time (orders the builds of one application)."""
    import secrets as tokens
    import time

    return PREFIX + tokens.token_hex(8), time.time_ns()


def state_actor(name: str, built_at: int) -> Any:
    """The build's :class:`AppState` actor, started by whoever asks first (builder, router or replica)."""
    import ray

    actor: Any = ray.remote(num_cpus=0, max_restarts=0)(AppState)
    return actor.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(built_at)


def hand_over(name: str, built_at: int, secrets: dict[str, Any]) -> None:
    """The builder's part: ``secrets`` into the build's actor (a method call: never part of a stored spec)."""
    import ray

    ray.get(state_actor(name, built_at).put_secrets.remote(secrets))


def join_as_router(name: str, built_at: int, expected: list[str]) -> tuple[Any, dict[str, Any]]:
    """The router's part: the build's actor and its secrets (``expected`` names them: :func:`check_secrets`);
    claims the actor for this application and stops the actors of the builds it replaced."""
    import ray
    from ray import serve

    state = state_actor(name, built_at)
    secrets: dict[str, Any] = check_secrets(ray.get(state.get_secrets.remote()), expected, name)
    retire_older(state, serve.get_replica_context().app_name)
    return state, secrets


def check_secrets(secrets: dict[str, Any], expected: list[str], name: str) -> dict[str, Any]:
    """``secrets``, if it holds every field the builder handed over; else fail closed: a router or replica started
    after the state actor was lost (its node died) must not serve without the API keys it was built with."""
    missing = [field for field in expected if field not in secrets]
    if missing:
        raise RuntimeError(
            f"the application's {', '.join(missing)} are gone with its state actor {name!r} (the node that held it "
            "stopped): refusing to start without them; deploy the application again"
        )
    return secrets


def retire_older(state: Any, app_name: str) -> None:
    """Claim ``state`` for ``app_name`` and stop the state actors of the builds of ``app_name`` it replaced."""
    import ray

    _, built_at = ray.get(state.claim.remote(app_name))
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != NAMESPACE or not entry["name"].startswith(PREFIX):
            continue
        try:
            other = ray.get_actor(entry["name"], namespace=NAMESPACE)
            owner, other_built = cast(tuple[str | None, int], ray.get(other.owner.remote(), timeout=30))
        except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            continue  # gone meanwhile
        if owner == app_name and other_built < built_at:
            logger.info("stopping %s, the state of a replaced build of %s", entry["name"], app_name)
            ray.kill(other)


class SharedFeedback(FeedbackBook):
    """A replica's feedback book: its own outcomes, queued for the others, and theirs (:meth:`ReplicaSync.sync`)."""

    def __init__(self) -> None:
        super().__init__()
        self.outbox: list[tuple[str, str, Outcome]] = []

    def record(self, served: Served, result: Outcome) -> None:
        super().record(served, result)
        self.outbox.append((served.route, served.arm, result))


class ReplicaSync:
    """A scoring replica's side: applies tagged admin changes in log order and replays the ones other replicas
    ran; exchanges feedback outcomes."""

    def __init__(self, app: Any, state: Any, replica: str, admin_key: str | None) -> None:
        self.app, self.state, self.replica, self.admin_key = app, state, replica, admin_key
        self.applied = 0
        self.seen = 0
        self.lock = asyncio.Lock()
        self.feedback = SharedFeedback()
        app.state.engine.feedback = self.feedback
        self.task: asyncio.Task[None] | None = None

    async def apply(self, request: ForwardedRequest, sequence: int) -> ForwardedResponse:
        """The change numbered ``sequence``, after every earlier one."""
        async with self.lock:
            await self._replay(before=sequence)
            response = await call_asgi(self.app, request)
            if response.status < 300:
                self.applied = sequence
            return response

    async def sync(self) -> None:
        """Replay the admin changes this replica lacks; send its feedback outcomes, take the others'."""
        outbox, self.feedback.outbox = self.feedback.outbox, []
        async with self.lock:
            try:
                changes, others, seen = await self.state.poll.remote(self.replica, self.applied, outbox, self.seen)
            except BaseException:
                self.feedback.outbox[:0] = outbox[-MAX_EVENTS:]  # sent again next time
                raise
            await self._run(changes, before=None)
        self.seen = seen
        for route, arm, outcome in others:
            FeedbackBook.record(self.feedback, Served(route, arm, (), 0.0), outcome)

    async def _replay(self, before: int) -> None:
        await self._run(await self.state.since.remote(self.applied), before)

    async def _run(self, changes: list[tuple[int, AdminChange]], before: int | None) -> None:
        for sequence, change in changes:
            if (before is not None and sequence >= before) or self.admin_key is None:
                break
            response = await call_asgi(self.app, change.replay(sequence, self.admin_key))
            if response.status >= 300:  # e.g. a model this replica restored from --state-file already
                logger.warning("admin change %d (%s %s) replayed with %d: %s", sequence, change.method,
                               change.path, response.status, response.body[:300])  # fmt: skip
            self.applied = sequence

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name="rerankd-replica-sync")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                await self.sync()
            except Exception as exc:  # the actor gone or superseded: keep serving what this replica has
                logger.warning("replica sync failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
