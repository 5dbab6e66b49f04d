"""API keys: ``Authorization: Bearer <key>``, compared in constant time against every configured key."""

from __future__ import annotations

import hmac

from fastapi.security import HTTPBearer


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """True when ``given`` equals one of ``keys``; every key is compared, so timing reveals nothing."""
    given_bytes = given.encode("utf-8")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given_bytes, key.encode("utf-8"))
    return matched


def bearer_token_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# Declares the Bearer scheme in the OpenAPI schema. The check itself runs in the request middleware, from the
# headers, before any of the body is read (server/middleware.py).
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key> (when keys are configured)")
# The dependency routers declare (`APIRouter(dependencies=[Depends(require_api_key)])`): it adds the scheme to their
# OpenAPI operations; the middleware has already refused the request if its key was missing or wrong.
require_api_key = bearer_scheme
