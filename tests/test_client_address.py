"""The client's address and scheme behind Traefik: X-Forwarded-For/-Proto believed from the proxies in
CVUNET_TRUSTED_PROXIES only (issue 26: any container on the compose network could claim any address
to the sign-in limits). The compose stack end to end: tests/test_compose.py."""

from __future__ import annotations

import pytest
from flask import Flask, request

from cvunet_matting.webapp.proxies import TrustedProxies, networks

TRAEFIK, BALANCER, CLIENT = "10.203.0.2", "192.0.2.10", "203.0.113.5"


def seen_by(trusted: str, peer: str, forwarded_for: str = "", proto: str = "") -> tuple[str, str]:
    """(remote_addr, scheme) a Flask view sees for a request from `peer` with those headers."""
    app = Flask(__name__)
    app.wsgi_app = TrustedProxies(app.wsgi_app, networks(trusted.split(",")))  # type: ignore[method-assign]
    app.add_url_rule("/who", "who", lambda: f"{request.remote_addr} {request.scheme}")
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    if proto:
        headers["X-Forwarded-Proto"] = proto
    answer = app.test_client().get("/who", headers=headers, environ_base={"REMOTE_ADDR": peer})
    address, scheme = answer.get_data(as_text=True).split()
    return address, scheme


def test_traefiks_forwarded_address_and_scheme_are_the_clients():
    assert seen_by(TRAEFIK, TRAEFIK, CLIENT, "https") == (CLIENT, "https")


def test_anyone_else_claiming_an_address_or_https_is_ignored():
    """Another container on the compose network talks to gunicorn directly: its headers count for nothing."""
    assert seen_by(TRAEFIK, "10.203.0.9", CLIENT, "https") == ("10.203.0.9", "http")


def test_a_listed_front_balancer_is_looked_past_and_a_forged_entry_is_not_believed():
    trusted = f"{TRAEFIK},{BALANCER}"
    assert seen_by(trusted, TRAEFIK, f"{CLIENT}, {BALANCER}")[0] == CLIENT
    # The client wrote its own X-Forwarded-For (the balancer appends to it): only what the balancer added counts.
    assert seen_by(trusted, TRAEFIK, f"6.6.6.6, {CLIENT}, {BALANCER}")[0] == CLIENT
    # Without the balancer listed, the balancer is the client: nobody trusted vouches for what it says.
    assert seen_by(TRAEFIK, TRAEFIK, f"{CLIENT}, {BALANCER}")[0] == BALANCER


def test_a_mangled_hop_or_no_header_leaves_the_last_trusted_address():
    assert seen_by(TRAEFIK, TRAEFIK, "not-an-address") == (TRAEFIK, "http")
    assert seen_by(TRAEFIK, TRAEFIK) == (TRAEFIK, "http")
    assert seen_by(TRAEFIK, TRAEFIK, proto="gopher") == (TRAEFIK, "http")


def test_networks_and_ipv6_are_accepted_and_a_typo_is_refused():
    assert seen_by("10.203.0.0/30,::1", "::1", "2001:db8::7")[0] == "2001:db8::7"
    assert seen_by("10.203.0.0/30", "10.203.0.3", CLIENT)[0] == CLIENT
    with pytest.raises(ValueError, match="CVUNET_TRUSTED_PROXIES"):
        networks(["10.203.0.300"])


@pytest.mark.services
def test_the_app_believes_only_the_listed_proxies(clean_state):
    """Wired into the real app, with the default (loopback: make run's Traefik) and compose's setting."""
    from cvunet_matting.web import create_app

    def seen(app, peer: str) -> tuple[str, bool]:
        addresses: list[str] = []
        app.before_request_funcs.setdefault(None, []).insert(0, lambda: addresses.append(request.remote_addr))
        headers = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}
        answer = app.test_client().get("/healthz", headers=headers, environ_base={"REMOTE_ADDR": peer})
        return addresses[-1], "Strict-Transport-Security" in answer.headers  # HSTS: over HTTPS only

    assert seen(create_app({"TESTING": True}), "127.0.0.1") == (CLIENT, True)
    assert seen(create_app({"TESTING": True}), "10.203.0.9") == ("10.203.0.9", False)
    compose = {"TESTING": True, "CVUNET_TRUSTED_PROXIES": TRAEFIK}
    assert seen(create_app(compose), TRAEFIK) == (CLIENT, True)
    assert seen(create_app(compose), "127.0.0.1") == ("127.0.0.1", False)
