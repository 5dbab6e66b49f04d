"""Server fixtures: real uvicorn on 127.0.0.1 with an ephemeral port (in a thread), real tiny models, a real
redis-server on a random port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn

from rerankd import Reranker
from rerankd.families.base import CallOptions, Encoded
from rerankd.runtime.worker import FamilyWorker
from rerankd.server import create_app
from rerankd.server.cache import ScoreCache
from rerankd.settings import Settings
from tests.system_tools import unavailable


@dataclass
class RunningServer:
    url: str
    app: Any
    server: uvicorn.Server

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one Prometheus sample (0.0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return metric_value(text, name, **labels)


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


@contextlib.contextmanager
def serve(
    settings: Settings,
    rerankers: dict[str, Reranker] | None = None,
    wait_ready: bool = True,
    score_cache: ScoreCache | None = None,
) -> Iterator[RunningServer]:
    """Run the app for ``settings`` in a uvicorn thread; yields once it answers /ready (or, without
    ``wait_ready``, once it accepts connections). ``score_cache`` replaces the cache the settings describe."""
    app = create_app(settings, rerankers=rerankers, cache=score_cache)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    running = RunningServer(f"http://127.0.0.1:{port}", app, server)
    while wait_ready and httpx.get(running.url + "/ready", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test server never became ready: {httpx.get(running.url + '/ready').text}")
        time.sleep(0.02)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=30)


ServerFactory = Callable[..., RunningServer]


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start servers with custom settings inside one test; all are stopped at its end."""
    with contextlib.ExitStack() as stack:

        def start(
            rerankers: dict[str, Reranker] | None = None,
            wait_ready: bool = True,
            score_cache: ScoreCache | None = None,
            **fields: Any,
        ) -> RunningServer:
            settings = Settings(**{"cache": "none", **fields})
            return stack.enter_context(serve(settings, rerankers, wait_ready=wait_ready, score_cache=score_cache))

        yield start


@pytest.fixture(scope="session")
def bert(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def xlmr(xlmr_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(xlmr_ce), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> Reranker:
    return Reranker.from_pretrained(str(minilm_path), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def slow_bert(bert_ce: Path) -> Reranker:
    """The tiny cross-encoder with tiny batches (64 padded tokens): big requests take many forward passes."""
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32", batch_tokens=64)


@pytest.fixture(scope="session")
def main_server(bert: Reranker, xlmr: Reranker, minilm: Reranker) -> Iterator[RunningServer]:
    """One server for the API-shape tests: two cross-encoders, a bi-encoder, two A/B aliases, no cache."""
    settings = Settings(cache="none", routes=("ab=tiny:50,tiny-b:50", "only-b=tiny:0,tiny-b:1"))
    with serve(settings, {"tiny": bert, "tiny-b": xlmr, "minilm": minilm}) as running:
        yield running


class FailingFamily:
    """Wraps a real cross-encoder family; a batch holding the token ``bamboo`` raises (a crashing model)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.family = inner.family
        self.limits = inner.limits
        self.activation = inner.activation
        self.backend = inner.backend
        self.poison = inner.backend.token_to_id("bamboo")

    def encode_pairs(self, query: str, documents: Sequence[str], call: CallOptions) -> list[Encoded]:
        return list(self.inner.encode_pairs(query, documents, call))

    def score(self, batch: Sequence[Encoded], call: CallOptions) -> torch.Tensor:
        if any(self.poison in item.input_ids for item in batch):
            raise RuntimeError("CUDA exploded at /secret/path/model.py line 42")
        return torch.as_tensor(self.inner.score(batch, call))


class SleepyFamily(FailingFamily):
    """The cross-encoder, 20 ms slower per forward pass: a queue that drains slowly, whatever the machine."""

    def score(self, batch: Sequence[Encoded], call: CallOptions) -> torch.Tensor:
        time.sleep(0.02)
        return super().score(batch, call)


@pytest.fixture(scope="session")
def sleepy_bert(slow_bert: Reranker) -> Reranker:
    sleepy = SleepyFamily(slow_bert.family)
    return Reranker(replace(slow_bert.model, family=sleepy, worker=FamilyWorker(sleepy)))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def failing_bert(bert: Reranker) -> Reranker:
    failing = FailingFamily(bert.family)
    return Reranker(replace(bert.model, family=failing, worker=FamilyWorker(failing)))  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 and a random port (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield RedisServer(f"redis://127.0.0.1:{port}/0", process)
    finally:
        process.kill()  # also when frozen (SIGSTOP): SIGKILL needs no cooperation
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (it may be frozen or killed)."""
    with redis_server(tmp_path) as server:
        yield server
