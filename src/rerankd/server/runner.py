"""Run the app under uvicorn with a drain that keeps its promise.

On SIGTERM (or SIGINT) uvicorn stops accepting connections at once; the engine then lets queued and running work
finish for up to ``drain_timeout_s``; whatever is still unfinished at that deadline is answered with the documented
503 (``shutting down``), never cut off. uvicorn's own grace period is set just past the drain deadline, so it only
has finished connections left to close, and the process exits within ``drain_timeout_s`` + about a second.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from rerankd.server.engine import Engine
from rerankd.settings import Settings

logger = logging.getLogger(__name__)
UVICORN_MARGIN_S = 1.0  # uvicorn's grace period past the drain deadline: time for the 503s to be written


class DrainingServer(uvicorn.Server):
    """A uvicorn server that starts the engine's drain the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and self._drain is None:
            self._loop.call_soon_threadsafe(self._begin_drain)
        super().handle_exit(sig, frame)

    def _begin_drain(self) -> None:
        if self._drain is None:
            logger.info("stop signal: draining for up to %.1f s", self.engine.settings.drain_timeout_s)
            self._drain = asyncio.ensure_future(self.engine.drain())


def run_server(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` (made by :func:`rerankd.server.create_app` for ``settings``) until a stop signal."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.drain_timeout_s + UVICORN_MARGIN_S,  # type: ignore[arg-type]
        server_header=False,
    )
    DrainingServer(config, app.state.engine).run()
