"""Who may reach what, for every route but the API (which api/auth.py guards): pages need a signed-in
session, /metrics an admin (session or API key) or a metrics-only key (Prometheus's, which opens
nothing else); sign-in state lives in Flask-Login.

Never silently open: without users nobody gets in (a fresh install prints its first admin's
password, see accounts.bootstrap_admin); CVUNET_AUTH=single-user is the one way to run without
sign-in, and it is announced in the log at start and on every page.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, current_user, logout_user

from cvunet_matting.accounts import users as accounts
from cvunet_matting.accounts.users import Actor
from cvunet_matting.config import Settings

from . import proxies, single_user
from .api.auth import bearer_actor, bearer_reads_metrics, unauthorized
from .support import KEYED_BLUEPRINTS

log = logging.getLogger(__name__)
OPEN_ENDPOINTS = {
    "static",
    "health.healthz",
    "health.readyz",
    "signin.login",
    "signin.sign_in",
    "edge_refusal",  # Traefik's errors middleware asks it, for anyone
    "ui.api_docs",  # as open as the OpenAPI document it shows
}
MIN_TOKEN_CHARS = 32
SIGNED_IN_AT = "signed_in_at"
HOST_PREFIX = "__Host-"


@dataclass(frozen=True)
class AuthConfig:
    single_user: bool
    legacy_tokens: tuple[str, ...]
    session_hours: float
    allowed_hosts: tuple[str, ...] = ()  # single-user mode: names (besides addresses) it answers to


def auth_config(settings: Settings) -> AuthConfig:
    """The sign-in mode and session lifetime from the settings; legacy CVUNET_API_TOKENS checked."""
    short = [t for t in settings.api_tokens if len(t) < MIN_TOKEN_CHARS]
    if short:
        raise ValueError(
            f"CVUNET_API_TOKENS: every token needs at least {MIN_TOKEN_CHARS} characters "
            "(better: per-user keys, `cvunet-matting user key add NAME`)"
        )
    return AuthConfig(settings.single_user, settings.api_tokens, settings.session_hours, settings.allowed_hosts)


def loopback_host() -> bool:
    """The browser asked for this machine itself (`make run`): a context browsers treat as secure over
    plain HTTP too (Chromium and Firefox keep Secure cookies for http://localhost and 127.0.0.1)."""
    host = urlsplit("//" + request.host).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SessionCookies(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over HTTPS (through Traefik too) or to the
    loopback, and then named `__Host-session`: a browser keeps a cookie of that name only when it is
    Secure, for Path=/ and with no Domain, so no other host (a sibling subdomain) and no plain-HTTP page
    can set or replace it (cookie tossing: signing a victim in as someone else). Plain HTTP to any other
    name keeps the bare `session` cookie: browsers would drop a Secure one there, and nobody could sign in.
    Each context reads only its own name."""

    def get_cookie_secure(self, app) -> bool:
        return super().get_cookie_secure(app) or request.is_secure or loopback_host()

    def get_cookie_name(self, app) -> str:
        name = super().get_cookie_name(app)
        host_only = self.get_cookie_domain(app) is None and self.get_cookie_path(app) == "/"
        return HOST_PREFIX + name if host_only and self.get_cookie_secure(app) else name


def session_actor() -> Actor | None:
    if not current_user.is_authenticated:
        return None
    started = session.get(SIGNED_IN_AT, 0)
    if time.time() - started > current_app.extensions["cvunet.auth"].session_hours * 3600:
        logout_user()  # expired: sign in again
        return None
    return current_user._get_current_object()


def gate():
    """A before_request hook for everything outside /api/v1: sets g.actor, or refuses."""
    if request.endpoint is None or request.blueprint in KEYED_BLUEPRINTS or request.endpoint in OPEN_ENDPOINTS:
        return None
    if current_app.extensions["cvunet.auth"].single_user:
        g.actor = accounts.OPERATOR
        return None
    if request.endpoint == "metrics" and bearer_reads_metrics():
        return None  # a scrape: no actor, so nothing but the metrics view is reachable with it
    if request.endpoint == "metrics" or request.endpoint == "signin.check_admin":
        actor = bearer_actor() or session_actor()
        if actor is None:
            return flower_sign_in() or unauthorized()
        if not actor.is_admin:
            abort(403, description="Admins only.")
    else:
        actor = session_actor()
        if actor is None:
            if request.method in {"GET", "HEAD"} and request.blueprint != "page":
                return redirect(url_for("signin.login", next=request.full_path.rstrip("?")))
            abort(401, description="Sign in first.")
    g.actor = actor
    return None


def flower_sign_in():
    """Traefik's admin check for a signed-out browser opening Flower: off to sign in, and back.

    forwardAuth hands the check's answer to the client as it is, so a redirect reaches the browser;
    X-Forwarded-Uri (set by Traefik) says where it was going. Scripts, which do not ask for HTML,
    keep the 401 (curl's */* included)."""
    if request.endpoint != "signin.check_admin" or "text/html" not in request.headers.get("Accept", ""):
        return None
    target = request.headers.get("X-Forwarded-Uri", "")
    if not target.startswith("/flower") or "//" in target or "\\" in target:
        target = "/flower/"
    return redirect(url_for("signin.login", next=target))


def init_app(app: Flask, settings: Settings) -> AuthConfig:
    cfg = auth_config(settings)
    app.extensions["cvunet.auth"] = cfg
    # Traefik says whether it was HTTPS and who asked (sign-in limits count wrong passwords per client
    # address), believed from the listed proxies only. Wrapping wsgi_app is Flask's documented way to add middleware.
    trusted = proxies.networks(settings.trusted_proxies)
    app.wsgi_app = proxies.TrustedProxies(app.wsgi_app, trusted)  # type: ignore[method-assign]
    app.session_interface = SessionCookies()
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=cfg.session_hours)
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False  # a session ends session_hours after sign-in
    manager = LoginManager(app)
    manager.user_loader(accounts.by_session_id)
    if cfg.single_user:
        app.before_request(single_user.guard)  # before everything: the API's hook too
    app.before_request(gate)
    if cfg.single_user:
        log.warning("SINGLE-USER MODE (CVUNET_AUTH=single-user): no sign-in, every visitor acts as the operator")
    if cfg.legacy_tokens:
        log.warning("CVUNET_API_TOKENS is deprecated: its tokens act as the operator; move clients to per-user keys")
    return cfg
