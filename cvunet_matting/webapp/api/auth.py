"""Who may call /api/v1: a bearer API key (per user, see accounts), never the browser session.

CVUNET_API_TOKENS, if still set, are accepted as the operator's keys (see access.legacy_tokens).
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from cvunet_matting.accounts import users as accounts
from cvunet_matting.accounts.users import Actor
from cvunet_matting.errors import ErrorCode
from cvunet_matting.webapp.errors import error_json

from .operations import PUBLIC_ENDPOINTS


def token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    """Compare against every token in constant time (no early exit that would time the match)."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


def bearer_key() -> str | None:
    """The key of an `Authorization: Bearer KEY` header, if one of a plausible length was sent."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given and len(given) <= 256 else None


def bearer_reads_metrics() -> bool:
    """The header's key is a metrics-only key: /metrics lets it in, and nothing else does."""
    given = bearer_key()
    return given is not None and accounts.key_reads_metrics(given)


def bearer_actor() -> Actor | None:
    """The actor an `Authorization: Bearer KEY` header names, or None (a metrics-only key names nobody)."""
    given = bearer_key()
    return None if given is None else key_actor(given)


def key_actor(given: str) -> Actor | None:
    """The actor an API key names (a legacy token: the operator), or None; the drop-in endpoints read it
    from their own headers (remove.bg's `X-Api-Key`)."""
    if not given or len(given) > 256:
        return None
    legacy = current_app.extensions["cvunet.auth"].legacy_tokens
    if legacy and token_matches(given, legacy):
        return accounts.OPERATOR
    return accounts.by_key(given)


def unauthorized():
    response, status = error_json(
        ErrorCode.UNAUTHORIZED, "a valid 'Authorization: Bearer <API key>' header is required", 401
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="cvunet-matting"'
    return response, status


def authenticate():
    """A before_request hook of the API: sets g.actor, or answers 401."""
    if current_app.extensions["cvunet.auth"].single_user:
        g.actor = accounts.OPERATOR
        return None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    actor = bearer_actor()
    if actor is None:
        return unauthorized()
    g.actor = actor
    return None
