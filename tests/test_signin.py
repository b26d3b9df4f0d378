"""Sign-in under attack, with real requests against the real app: a threaded server on 127.0.0.1, clients
from real loopback addresses (127.0.0.N) and, for IPv6, the X-Forwarded-For that Traefik appends.

The app runs with its production settings. Argon2 verifications are counted (never timed): the app's
hasher is wrapped so a test sees how many ran, how many at once, and on which hash's parameters. The
clock of the sign-in limits is held still where a test depends on a delay not having run out.
"""

from __future__ import annotations

import http.client
import secrets
import threading
from urllib.parse import urlencode

import argon2
import pytest
from werkzeug.serving import make_server

from cvunet_matting.accounts import signin_limits
from tests import support

pytestmark = [pytest.mark.services]
WRONG = "not-the-password"


class CountingHasher:
    """The app's argon2 hasher, counting the verifications it runs; `gate` holds them while cleared."""

    def __init__(self, real: argon2.PasswordHasher):
        self.real = real
        self.verified: list[argon2.Parameters] = []
        self.in_flight = 0
        self.most_at_once = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def verify(self, stored: str, password: str) -> bool:
        with self._lock:
            self.verified.append(argon2.extract_parameters(stored))
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            self.gate.wait(timeout=120)
            return self.real.verify(stored, password)
        finally:
            with self._lock:
                self.in_flight -= 1

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def hasher(monkeypatch):
    from cvunet_matting.accounts import users

    counting = CountingHasher(users.HASHER)
    monkeypatch.setattr(users, "HASHER", counting)
    yield counting
    counting.gate.set()


@pytest.fixture
def still_clock(monkeypatch):
    """The sign-in limits' clock stands still: a delay never runs out while a test looks at it."""
    import types

    now = signin_limits.time.time()
    monkeypatch.setattr(signin_limits, "time", types.SimpleNamespace(time=lambda: now))


@pytest.fixture
def server(clean_state, hasher):
    from cvunet_matting.web import create_app

    app = create_app()  # production settings: CVUNET_SIGNIN_HASHES and the limits as shipped
    httpd = make_server("127.0.0.1", support.free_port(), app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    app.extensions["cvunet.waits"].close()
    httpd.shutdown()
    httpd.server_close()


class Browser:
    """A browser at one address: 127.0.0.N itself, or (forwarded) an address Traefik says it saw."""

    def __init__(self, port: int, source: str = "127.0.0.1", forwarded_for: str | None = None):
        self.port, self.source, self.forwarded_for = port, source, forwarded_for
        self.cookie = ""
        status, body = self.request("GET", "/login")
        assert status == 200, status
        self.csrf = support.accounts.CSRF_META.search(body).group(1)

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str]:
        self.status, self.body, self.headers = self._send(method, path, form)
        return self.status, self.body

    def _send(self, method: str, path: str, form: dict | None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120, source_address=(self.source, 0))
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if self.forwarded_for:
            headers["X-Forwarded-For"] = self.forwarded_for
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, urlencode(form).encode() if form is not None else None, headers)
            response = conn.getresponse()
            body = response.read().decode()
            if response.getheader("Set-Cookie"):
                self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
            return response.status, body, response.headers
        finally:
            conn.close()

    def sign_in(self, name: str, password: str) -> int:
        form = {"csrf_token": self.csrf, "name": name, "password": password}
        status, _ = self.request("POST", "/login", form)
        if status == 302:  # a new session: a new CSRF token with it
            self.csrf = support.accounts.CSRF_META.search(self.request("GET", "/login")[1]).group(1)
        return status


def unknown_name() -> str:
    return f"nobody-{secrets.token_hex(6)}"


def in_threads(calls) -> list:
    """Run each call in a thread of its own; their results once every one has answered."""
    results: list = [None] * len(calls)

    def run(i, call):
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    return threads, results


# ------------------------------------------------------------------ a flood costs a bounded number of hashes


def test_a_flood_of_sign_ins_for_unknown_names_hashes_a_bounded_number_at_once(server, hasher):
    from cvunet_matting.config import get_settings

    slots = get_settings().signin_hashes
    assert slots == 2  # the shipped default is what this test floods
    hasher.gate.clear()  # the first hashes take as long as the test likes
    held = [Browser(server, f"127.0.0.{10 + i}") for i in range(slots)]
    first, first_answers = in_threads([lambda b=b: b.sign_in(unknown_name(), WRONG) for b in held])
    support.wait_until(lambda: hasher.in_flight == slots, 60, message="the first sign-ins hashing")
    # Every slot busy: 24 more sign-ins for new names, from new addresses, are answered at once.
    flood = [Browser(server, f"127.0.1.{i}") for i in range(24)]
    rest, answers = in_threads([lambda b=b: b.sign_in(unknown_name(), WRONG) for b in flood])
    for thread in rest:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in rest), "sign-ins queued behind the busy hashes"
    assert answers == [429] * len(flood)
    assert {b.headers["Retry-After"] for b in flood} == {"1"}
    assert "Too many sign-ins at this moment" in flood[0].body
    assert len(hasher.verified) == slots and hasher.in_flight == slots
    hasher.gate.set()
    for thread in first:
        thread.join(timeout=120)
    assert first_answers == [401] * slots and hasher.most_at_once == slots
    # The slots are free again.
    assert flood[0].sign_in(unknown_name(), WRONG) == 401


# ------------------------------------------------------------------ guessing a name does not lock its owner out


def test_guessing_from_many_addresses_never_keeps_the_owner_out(server, hasher, still_clock, alice):
    home = Browser(server, "127.0.0.10")
    assert home.sign_in(alice.name, alice.password) == 302  # home is now a place alice signs in from
    travelling = Browser(server, "127.0.0.11")
    assert travelling.sign_in(alice.name, alice.password) == 302
    before = len(hasher.verified)
    answers = []
    for n in range(10):  # 10 wrong passwords from each of 10 addresses
        guesser = Browser(server, f"127.0.2.{n}")
        answers += [guesser.sign_in(alice.name, WRONG) for _ in range(10)]
    # A few typos' worth are tried; then each waits longer than the last, and a waiting try hashes nothing.
    assert answers == [401] * signin_limits.FREE_FAILS + [429] * (100 - signin_limits.FREE_FAILS)
    assert len(hasher.verified) - before == signin_limits.FREE_FAILS
    stranger = Browser(server, "127.0.3.1")
    assert stranger.sign_in(alice.name, alice.password) == 429  # even the right password waits, from elsewhere
    assert 0 < int(stranger.headers["Retry-After"]) <= signin_limits.MAX_DELAY_S
    assert Browser(server, "127.0.0.10").sign_in(alice.name, alice.password) == 302  # the owner, from home
    # The owner's browser, signed in, moved to an address never seen: its session vouches for it.
    travelling.source = "127.0.3.2"
    assert travelling.sign_in(alice.name, alice.password) == 302


def test_wrong_passwords_from_the_owners_own_address_slow_only_that_address(server, still_clock, alice):
    home = Browser(server, "127.0.0.10")
    assert home.sign_in(alice.name, alice.password) == 302
    typos = [Browser(server, "127.0.0.10").sign_in(alice.name, WRONG) for _ in range(signin_limits.FREE_FAILS + 1)]
    assert typos == [401] * signin_limits.FREE_FAILS + [429]
    assert Browser(server, "127.0.3.3").sign_in(alice.name, alice.password) == 302  # elsewhere: no delay


# ------------------------------------------------------------------ per address, across every name


def test_an_address_guessing_many_names_is_stopped_and_others_are_not(server, alice):
    known = Browser(server, "127.0.0.40")
    assert known.sign_in(alice.name, alice.password) == 302
    guesser = Browser(server, "127.0.0.40")
    tries = [guesser.sign_in(unknown_name(), WRONG) for _ in range(signin_limits.ADDRESS_FAILS)]
    assert tries == [401] * signin_limits.ADDRESS_FAILS  # one try per name: no name's delay is reached
    assert guesser.sign_in(unknown_name(), WRONG) == 429
    assert 0 < int(guesser.headers["Retry-After"]) <= signin_limits.ADDRESS_WINDOW_S
    bob = support.make_user(prefix="bob")
    assert Browser(server, "127.0.0.40").sign_in(bob.name, bob.password) == 429  # everyone else there waits
    assert Browser(server, "127.0.0.40").sign_in(alice.name, alice.password) == 302  # who signs in there, not
    assert Browser(server, "127.0.0.41").sign_in(bob.name, bob.password) == 302  # another address is not held


def test_ipv6_addresses_of_one_64_are_one_client(server):
    def from_address(address: str) -> Browser:
        return Browser(server, forwarded_for=address)  # as Traefik appends the client it saw

    tries = [
        from_address(f"2001:db8:1:2::{n:x}").sign_in(unknown_name(), WRONG)
        for n in range(1, signin_limits.ADDRESS_FAILS + 1)
    ]
    assert tries == [401] * signin_limits.ADDRESS_FAILS
    assert from_address("2001:db8:1:2:ffff:ffff:ffff:fffe").sign_in(unknown_name(), WRONG) == 429
    assert from_address("2001:db8:1:3::1").sign_in(unknown_name(), WRONG) == 401  # the next /64: another client


def test_addresses_are_grouped_as_clients():
    bucket = signin_limits.address_bucket
    assert bucket("203.0.113.9") == "203.0.113.9" != bucket("203.0.113.10")
    assert bucket("2001:db8:1:2::1") == bucket("2001:db8:1:2:abcd::9") == "2001:db8:1:2::/64"
    assert bucket("2001:db8:1:2::1") != bucket("2001:db8:1:3::1")
    assert bucket("::ffff:203.0.113.9") == "203.0.113.9"
    assert bucket("fe80::1%eth0") == "fe80::/64"
    assert bucket("unknown") == "unknown"


# ------------------------------------------------------------------ unknown names cost the same work


def test_unknown_names_cost_the_same_hashing_as_known_ones(server, hasher, alice):
    from cvunet_matting.accounts import users

    keys_only = support.make_user(prefix="keys")
    users.update_user(keys_only.name, password_hash=None)
    disabled = support.make_user(prefix="gone")
    users.update_user(disabled.name, disabled=True)
    expected = argon2.extract_parameters(users.HASHER.real.hash("x" * 12))
    for name, address in (
        (alice.name, "127.0.4.1"),
        (unknown_name(), "127.0.4.2"),
        (keys_only.name, "127.0.4.3"),
        (disabled.name, "127.0.4.4"),
    ):
        before = len(hasher.verified)
        assert Browser(server, address).sign_in(name, WRONG) == 401
        assert hasher.verified[before:] == [expected], name  # one argon2id verification, the same cost
    assert Browser(server, "127.0.4.5").sign_in(disabled.name, disabled.password) == 401
