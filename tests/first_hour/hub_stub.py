"""A stand-in for the Hugging Face hub on 127.0.0.1 (no internet): it serves one repository from a local folder
with the hub's own API paths (model info, file tree, ``resolve`` downloads), or answers every request with a fixed
error status and ``X-Error-Code``; it records the requests it gets so tests can count them."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class StubHub:
    def __init__(self, repo_id: str, folder: Path | None = None, status: int = 200, error_code: str | None = None):
        self.repo_id, self.folder, self.status, self.error_code = repo_id, folder, status, error_code
        self.requests: list[str] = []
        self.sha = "5" * 40
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, head=True)

            def do_GET(self) -> None:
                hub.answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def model_requests(self) -> list[str]:
        return [r for r in self.requests if f"/{self.repo_id}" in r]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _files(self) -> list[Path]:
        assert self.folder is not None
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def _name(self, path: Path) -> str:
        assert self.folder is not None
        return str(path.relative_to(self.folder))

    def answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        self.requests.append(f"{handler.command} {handler.path}")
        path = handler.path.split("?")[0]
        if self.status != 200:
            return self._send(handler, self.status, b"", {"X-Error-Code": self.error_code or ""})
        if path.startswith(f"/api/models/{self.repo_id}/tree/"):
            tree = [
                {"type": "file", "path": self._name(p), "size": p.stat().st_size, "oid": _sha1(p.read_bytes())}
                for p in self._files()
            ]
            return self._json(handler, tree)
        if path.startswith(f"/api/models/{self.repo_id}"):
            siblings = [{"rfilename": self._name(p)} for p in self._files()]
            return self._json(handler, {"id": self.repo_id, "sha": self.sha, "siblings": siblings})
        prefix = f"/{self.repo_id}/resolve/"
        if path.startswith(prefix) and self.folder is not None:
            data = (self.folder / path[len(prefix) :].split("/", 1)[1]).read_bytes()
            headers = {"X-Repo-Commit": self.sha, "ETag": f'"{_sha1(data)}"'}
            return self._send(handler, 200, b"" if head else data, headers, length=len(data))
        return self._send(handler, 404, b"", {})

    def _json(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        self._send(handler, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], length: int | None = None
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            if value:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data) if length is None else length))
        handler.end_headers()
        handler.wfile.write(data)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
