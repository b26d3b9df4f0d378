"""Credentials in connection URLs work but never reach logs or error messages."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from cvunet_matting.worker.supervisor import WorkerSpec, command
from tests import support

REDIS_SECRET = "redis-secret-3f9a"
PG_SECRET = "pg-secret-7c21"  # the test server trusts local clients, so any password is accepted


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


@pytest.fixture
def passworded_redis():
    server = support.PrivateRedis(password=REDIS_SECRET).start()
    yield server
    server.stop()


@pytest.mark.services
def test_a_worker_on_a_passworded_redis_never_logs_the_passwords(database, passworded_redis, tmp_path):
    env = {
        **os.environ,
        "CVUNET_REDIS_URL": passworded_redis.url,
        "CVUNET_DATABASE_URL": with_password(os.environ["CVUNET_DATABASE_URL"], PG_SECRET),
        "CVUNET_DEVICE": "cpu",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command(WorkerSpec("secret0@%h", {}), "matting", "DEBUG"),
            cwd=support.REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        support.wait_until(
            lambda: b" ready." in log_path.read_bytes(), 60, message="worker ready on the passworded Redis"
        )
        time.sleep(1)  # let the startup banner and connection logging finish
    finally:
        support.kill_group(proc)
    text = log_path.read_text(errors="replace")
    assert f"127.0.0.1:{passworded_redis.port}" in text  # the broker is named ...
    assert REDIS_SECRET not in text and PG_SECRET not in text  # ... its password is not


@pytest.mark.services
def test_a_cli_error_about_the_database_does_not_show_its_password(database):
    url = f"postgresql://postgres:{PG_SECRET}@127.0.0.1:{support.free_port()}/nothing"
    done = support.run_cli("requeue", "--failed", "--dry-run", env={"CVUNET_DATABASE_URL": url})
    assert done.returncode != 0
    assert done.stderr.startswith("error: postgres: ") and done.stderr.count("\n") == 1  # one line, no traceback
    assert PG_SECRET not in done.stdout + done.stderr
