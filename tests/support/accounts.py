"""Accounts for tests: users with a password and an API key, and signing a test client in."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


@dataclass(frozen=True)
class TestUser:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    id: int
    name: str
    password: str
    key: str
    is_admin: bool

    @property
    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}


def make_user(admin: bool = False, prefix: str = "user", **quotas) -> TestUser:
    """A new user in this run's database (a unique name), with a password and one API key.

    Quotas default to none; pass max_in_flight=..., max_per_day=..., max_batch=... to set them."""
    from cvunet_matting.accounts import users as accounts

    name = f"{prefix}-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    row = accounts.add_user(name, password, is_admin=admin, quotas=quotas)
    key, _ = accounts.new_key(name, "test")
    return TestUser(row["id"], name, password, key, admin)


def page_csrf(client, path: str = "/login") -> str:
    """The CSRF token a page of ours carries (in its <meta name="csrf-token">)."""
    html = client.get(path).get_data(as_text=True)
    return CSRF_META.search(html).group(1)


def sign_in(client, user: TestUser) -> None:
    """Sign a Flask test client in through the real form; raises unless it worked."""
    token = page_csrf(client, "/login")
    response = client.post("/login", data={"csrf_token": token, "name": user.name, "password": user.password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]


def user_client(app, user: TestUser, signed_in: bool = True):
    """A test client that sends the user's API key on every request (and holds their session)."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user.key}"
    if signed_in:
        sign_in(client, user)
    return client


def http_sign_in(base: str, user: TestUser) -> dict:
    """Sign in over real HTTP (through Traefik, say): the Cookie header of the signed-in session."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    from .httpclient import fetch

    status, body, headers = fetch("GET", f"{base}/login")
    assert status == 200, status
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    form = {"csrf_token": CSRF_META.search(body.decode()).group(1), "name": user.name, "password": user.password}
    where = urlsplit(base)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            urlencode(form).encode(),
            {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 302, response.status
        return {"Cookie": response.getheader("Set-Cookie").split(";", 1)[0]}
    finally:
        conn.close()
