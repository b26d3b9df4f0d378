"""Who is asking: the client's address and scheme as the proxy in front reports them, believed only
from the proxies listed in CVUNET_TRUSTED_PROXIES.

Traefik drops the X-Forwarded-* headers a client sends, appends the address its connection came from
to X-Forwarded-For and says in X-Forwarded-Proto whether it was HTTPS. Any other process that reaches
gunicorn (a container on the compose network, a local user) can send the same headers, so they count
only on a connection from a listed proxy; then X-Forwarded-For is read from the right past every
listed address (a front load balancer listed too), and the first other address is the client's.
Everything keyed on the client's address (the sign-in limits) reads `request.remote_addr`, set here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = {"http", "https"}


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """CVUNET_TRUSTED_PROXIES's addresses and networks (`10.203.0.2`, `10.0.0.0/30`, `::1`)."""
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as exc:
        raise ValueError(f"CVUNET_TRUSTED_PROXIES: {exc}") from None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR and wsgi.url_scheme from a trusted proxy's headers, else untouched."""

    def __init__(self, app, trusted: tuple[Network, ...]):
        self.app = app
        self.trusted = trusted

    def is_trusted(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in network for network in self.trusted)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The rightmost address of peer + X-Forwarded-For that no trusted proxy vouches beyond."""
        client = peer
        for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
            if not self.is_trusted(client) or _address(hop) is None:
                break  # the client is who last spoke to a trusted proxy; a mangled hop ends the chain
            client = hop
        return client

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR", "")
        if self.is_trusted(peer):
            environ["REMOTE_ADDR"] = self.client(peer, environ.get("HTTP_X_FORWARDED_FOR", ""))
            scheme = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if scheme in SCHEMES:
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)
