"""API keys: ``Authorization: Bearer <key>``, compared in constant time against every configured key."""

from __future__ import annotations

import hmac

from fastapi import Request

from rerankd.server.errors import Unauthorized


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """True when ``given`` equals one of ``keys``; every key is compared, so timing reveals nothing."""
    given_bytes = given.encode("utf-8")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given_bytes, key.encode("utf-8"))
    return matched


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for the API routes (not health, readiness, metrics or docs)."""
    keys: tuple[str, ...] = request.app.state.settings.api_key
    if not keys:
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    if not key_matches(token, keys):
        raise Unauthorized("invalid API key")
