"""What every web edge needs from the current app and session: settings, CSRF tokens, safe headers."""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, request, session

from cvunet_matting.config import Settings

CSRF_KEY = "csrf"
# Blueprints that check API keys themselves (api/auth.py; the drop-in endpoints, dropin/): neither the
# sign-in gate nor the forms' CSRF check applies to them, and the browser session never opens them.
KEYED_BLUEPRINTS = frozenset({"api", "removebg", "rembg"})
KEYED_PREFIXES = ("/api/", "/v1.0/")  # their paths: a wrong method there (no blueprint matched) is still theirs
HSTS = "max-age=31536000; includeSubDomains"  # sent over HTTPS only (Traefik's X-Forwarded-Proto)
# form-action, base-uri and object-src do not fall back to default-src: each is closed on its own (an
# injected <form> or <base> could otherwise send a form, sign-in's included, to another site).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'"
)


def settings() -> Settings:
    """The settings of the app serving the current request."""
    return current_app.extensions["cvunet.settings"]


def csrf_token() -> str:
    """This browser session's CSRF token, made on first use."""
    if CSRF_KEY not in session:
        session[CSRF_KEY] = secrets.token_urlsafe(32)
    return session[CSRF_KEY]


def csrf_valid(given: str | None) -> bool:
    """The token matches this session's, compared in constant time."""
    expected = session.get(CSRF_KEY)
    if not (given and expected):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def security_headers(response):
    """No sniffing, no framing, no third-party scripts: set on every response unless a view chose."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response
