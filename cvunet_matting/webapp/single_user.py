"""Single-user mode's fence: with no sign-in, the server must tell its user from a web page that merely
reached it.

Two ways in otherwise, both through the user's own browser: a page on another site posting a form to
this server (the browser sends it, and the API asks no key in this mode), and DNS rebinding (a name of
the attacker's that resolves to this server, which makes the browser treat its answers as that page's
own, readable). So a request that changes something must come from this site (the browser's
Sec-Fetch-Site, else Origin), and the Host must be an IP address, localhost, or a name the operator
listed in CVUNET_ALLOWED_HOSTS.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from flask import current_app, request

from cvunet_matting.errors import ErrorCode, InputError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_NAMES = frozenset({"localhost"})
# Asked by the proxy by the server's own name (Traefik's health checks, its Flower check: compose calls
# the server "web"), and telling nothing about anyone's work.
PROBES = frozenset({"health.healthz", "health.readyz", "signin.check_admin"})


def host_name(host: str) -> str:
    """The name in a Host header: without the port or an IPv6 address's brackets, lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """An address cannot be rebound to another server; a name can, unless the operator vouches for it."""
    name = host_name(host)
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in LOCAL_NAMES or name.endswith(".localhost") or name in allowed


def from_elsewhere(method: str, headers, host: str) -> bool:
    """A change asked by a page of another site: Sec-Fetch-Site says so (every current browser sends it),
    else an Origin that is not this host."""
    if method in SAFE_METHODS:
        return False
    site = headers.get("Sec-Fetch-Site")
    if site:
        return site not in {"same-origin", "none"}
    origin = headers.get("Origin")
    return bool(origin) and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower())


def guard() -> None:
    """A before_request hook, in single-user mode only."""
    if request.endpoint in PROBES:
        return
    allowed = current_app.extensions["cvunet.auth"].allowed_hosts
    if not host_allowed(request.host, allowed):
        raise InputError(
            f"this server runs without sign-in (single-user mode) and answers only to its own addresses, not to"
            f" {host_name(request.host)!r}; its operator can add that name to CVUNET_ALLOWED_HOSTS",
            code=ErrorCode.UNKNOWN_HOST,
        )
    if from_elsewhere(request.method, request.headers, request.host):
        raise InputError(
            "a page of another site asked this server (single-user mode) to act: refused", code=ErrorCode.CROSS_SITE
        )
