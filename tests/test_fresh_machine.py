"""`make run` on a machine without Redis or PostgreSQL: one line saying what to install, no traceback.

Both ways in: the Makefile's (.ci/prepare-machine run, before anything is installed) and `cvunet-matting
run` itself (devstack.services). Nothing is installed or started here: the tools are hidden from PATH,
and every URL names a port where nothing listens, or a listener that is not the service.
docker/ci/fresh-run.sh proves the other half, `make run` on a bare Debian image, for real.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvunet_matting.devstack import services
from tests import support

REPO = Path(__file__).resolve().parents[1]
PREPARE = REPO / ".ci" / "prepare-machine"
REDIS_LINE = (
    "redis-server not found: install Redis (Debian: apt-get install redis-server) "
    "or set CVUNET_REDIS_URL to a running one"
)
POSTGRES_LINE = (
    "pg_ctlcluster not found: install PostgreSQL (Debian: apt-get install postgresql) "
    "or set CVUNET_DATABASE_URL to a running one"
)


def nothing_listening() -> int:
    return support.free_port()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers: something that is not Redis or PostgreSQL."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def bare_path(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only `tools` (links to the real ones): a machine with no Redis or PostgreSQL."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    return str(folder)


def prepare_machine(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`.ci/prepare-machine run` as on a machine without apt-get (not Debian): it can install nothing."""
    base = {
        "PATH": bare_path(tmp_path, "id"),
        "BOOTSTRAP_PYTHON": sys.executable,  # a Python with venv: only the services are missing
        "VENV": str(tmp_path / "no-venv"),
    }
    return subprocess.run(
        ["/bin/bash", str(PREPARE), "run"], cwd=REPO, env=base | env, capture_output=True, text=True, timeout=60
    )


def test_make_run_prepares_the_machine_before_anything_else():
    # As a newcomer's shell runs it, not as a sub-make of `make test-unit` (which would add its
    # "Entering directory" lines and pass its own flags down).
    outside_make = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    planned = subprocess.run(
        ["make", "-n", "-B", "run"], cwd=REPO, env=outside_make, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert planned[0].endswith("bash .ci/prepare-machine run")  # before the venv is made: it needs venv
    assert planned[-1].endswith("cvunet-matting run")


def test_make_run_without_redis_or_postgres_says_what_to_install_and_stops(tmp_path):
    done = prepare_machine(tmp_path)
    assert done.returncode == 1
    # Only what `make run` needs: no Chromium, no docker-compose (those are `make test`'s).
    assert done.stderr.splitlines() == [f"error: {REDIS_LINE}", f"error: {POSTGRES_LINE}"]


def test_make_run_needs_nothing_local_when_the_urls_name_other_machines(tmp_path):
    done = prepare_machine(
        tmp_path,
        CVUNET_REDIS_URL="redis://:secret@redis.example:6379/0",
        CVUNET_DATABASE_URL="postgresql://cvunet:secret@db.example/cvunet",
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_cvunet_matting_run_without_redis_server_is_one_line(tmp_path):
    env = {
        "PATH": str(tmp_path),  # no redis-server on it
        "CVUNET_REDIS_URL": f"redis://127.0.0.1:{nothing_listening()}/0",
        "CVUNET_DATA_DIR": str(tmp_path / "data"),
    }
    done = support.run_cli("run", env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"Error: {REDIS_LINE}"]


@pytest.mark.services  # Redis answers (this run's own database); PostgreSQL is the missing one
def test_cvunet_matting_run_without_postgresql_is_one_line(tmp_path):
    env = {
        "PATH": str(tmp_path),  # no pg_ctlcluster on it
        "CVUNET_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{nothing_listening()}/cvunet",
        "CVUNET_DATA_DIR": str(tmp_path / "data"),
    }
    done = support.run_cli("run", env=env)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    # Which of the two depends on this machine: a PostgreSQL cluster configured or none at all.
    no_cluster = f"no PostgreSQL cluster in /etc/postgresql: {services.INSTALL_POSTGRES}"
    assert line in {f"Error: {POSTGRES_LINE}", f"Error: {no_cluster}"}


def test_no_cluster_folder_names_the_folder_and_what_to_install(tmp_path):
    missing = tmp_path / "etc-postgresql"
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_postgres(f"postgresql://postgres@127.0.0.1:{nothing_listening()}/x", clusters=missing)
    assert str(raised.value) == f"no PostgreSQL cluster in {missing}: {services.INSTALL_POSTGRES}"


def test_a_cluster_without_pg_ctlcluster_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "clusters" / "15" / "main").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_postgres(f"postgresql://postgres@127.0.0.1:{nothing_listening()}/x", tmp_path / "clusters")
    assert str(raised.value) == POSTGRES_LINE


def test_the_newest_cluster_is_chosen_by_version_not_by_text(tmp_path, monkeypatch):
    for version in ("9.6", "15", "13"):
        (tmp_path / version / "main").mkdir(parents=True)
    ctl = tmp_path / "bin" / "pg_ctlcluster"
    ctl.parent.mkdir()
    ctl.symlink_to(shutil.which("true"))
    monkeypatch.setenv("PATH", str(ctl.parent))
    assert services.cluster_start_argv(tmp_path) == [str(ctl), "--skip-systemctl-redirect", "15", "main", "start"]


def test_a_local_port_held_by_something_else_is_not_started_over(silent_listener, tmp_path, monkeypatch):
    """A password, TLS or another program on the port: the message says so; no second server is tried."""
    monkeypatch.setenv("PATH", str(tmp_path))  # were redis-server tried, it would say "not found"
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_redis(f"redis://127.0.0.1:{silent_listener}/0")
    message = str(raised.value)
    assert message.startswith(f"Redis at 127.0.0.1:{silent_listener} is not usable (")
    assert message.endswith("): check CVUNET_REDIS_URL") and "\n" not in message


def test_postgres_that_does_not_let_us_in_names_the_url_and_pg_hba(silent_listener):
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_postgres(f"postgresql://postgres:pw-7d1e@127.0.0.1:{silent_listener}/x")
    message = str(raised.value)
    assert message.startswith(f"PostgreSQL at 127.0.0.1:{silent_listener} does not let us in (")
    assert "CVUNET_DATABASE_URL" in message and "pg_hba.conf" in message
    assert "pw-7d1e" not in message and "\n" not in message


def test_another_machines_redis_is_never_started_here(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    port = nothing_listening()
    # 127.0.0.2 is loopback yet not a name the stack starts services for: as good as another machine.
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_redis(f"redis://127.0.0.2:{port}/0")
    assert str(raised.value).startswith(f"Redis at 127.0.0.2:{port} is not usable (")
