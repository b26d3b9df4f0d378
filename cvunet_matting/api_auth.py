"""Who may call /api/v1: with CVUNET_API_TOKENS set, a bearer token or a session our own pages started."""

from __future__ import annotations

import hmac

from flask import request

from .api_routes import PUBLIC_ENDPOINTS
from .http_errors import error_json
from .http_support import csrf_valid, has_browser_session, settings


def token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    """Compare against every token in constant time (no early exit that would time the match)."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


def authenticate():
    """A before_request hook: None lets the request through, else a 401 (CSRF header for a page's writes)."""
    tokens = settings().api_tokens
    if not tokens or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip() and token_matches(given.strip(), tokens):
        return None
    if csrf_valid(request.headers.get("X-CSRF-Token")):
        return None
    if request.method in {"GET", "HEAD"} and has_browser_session():
        return None  # <img> tags on our own pages cannot send headers
    response, status = error_json("unauthorized", "a valid 'Authorization: Bearer <token>' header is required", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="cvunet-matting"'
    return response, status
