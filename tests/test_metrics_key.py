"""Prometheus's credential: a metrics-only key reads /metrics and nothing else, whoever its user is."""

from __future__ import annotations

import re

import pytest

from tests import support

pytestmark = [pytest.mark.services]


def metrics_key_from_the_cli(user: str) -> str:
    added = support.run_cli("user", "key", "add", user, "--metrics-only", "--label", "prometheus")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("metrics-only key ")
    return re.search(r"\(shown once\): (cvm_\S+)", added.stdout).group(1)


def test_a_metrics_only_key_reads_metrics_and_opens_nothing_else(app, alice):
    assert support.run_cli("user", "add", "scraper-" + alice.name[-8:], "--no-password").returncode == 0
    scraper = "scraper-" + alice.name[-8:]
    key = metrics_key_from_the_cli(scraper)
    bearer = {"Authorization": f"Bearer {key}"}
    client = app.test_client()
    assert client.get("/metrics", headers=bearer).status_code == 200  # its user is no admin
    assert client.get("/api/v1/tasks", headers=bearer).status_code == 401
    assert client.post("/api/v1/images", headers=bearer).status_code == 401  # no upload either
    assert client.get("/auth/admin", headers=bearer).status_code == 401  # Flower's check
    assert client.get("/history", headers=bearer).status_code == 302  # the pages: off to sign in
    # Even an admin's metrics-only key stays a metrics-only key.
    admin = support.make_user(admin=True, prefix="admin")
    admins = {"Authorization": f"Bearer {metrics_key_from_the_cli(admin.name)}"}
    assert client.get("/metrics", headers=admins).status_code == 200
    assert client.get("/api/v1/tasks", headers=admins).status_code == 401
    assert client.get("/auth/admin", headers=admins).status_code == 401
    listed = support.run_cli("user", "key", "list", scraper).stdout
    assert " metrics " in listed and "prometheus" in listed
    # Revoked, or its user disabled: it reads nothing either.
    key_id = listed.split()[0]
    assert support.run_cli("user", "key", "revoke", scraper, key_id).returncode == 0
    assert client.get("/metrics", headers=bearer).status_code == 401
    assert support.run_cli("user", "disable", admin.name).returncode == 0
    assert client.get("/metrics", headers=admins).status_code == 401


def test_the_local_stacks_prometheus_scrapes_with_a_metrics_only_key(database, tmp_path):
    from cvunet_matting.accounts import users as accounts
    from cvunet_matting.devstack.prometheus import KEY_USER, scrape_key

    path = scrape_key(tmp_path / "web-token")
    key = path.read_text().strip()
    assert accounts.key_reads_metrics(key) and accounts.by_key(key) is None
    assert not accounts.find_user(KEY_USER)["is_admin"]
    assert scrape_key(path) == path and path.read_text().strip() == key  # kept while it works
