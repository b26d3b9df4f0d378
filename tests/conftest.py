"""Shared fixtures, and the unit tier: services are claimed only by runs that select a test needing them.

A test needs Redis and PostgreSQL when it uses the `services` fixture (every service fixture below
depends on it): it is marked `services`; one that uses `real_model_path` is marked `model`. A test
marked none of services, stack, browser, compose and model is marked `unit`: `make test-unit` runs
those alone, and they pass with no Redis or PostgreSQL running (CI runs them with no network at all).

The environment is set before any cvunet_matting module reads its settings: what needs no service in
pytest_configure, the Redis and Postgres URLs once collection shows whether this run needs them.
They cannot change later: get_settings() is cached and celeryconfig copies it at import. Under
pytest-xdist each worker process claims its own; the controller, which runs no test, claims nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg2.errors
import pytest
import redis

from tests import support

REAL_MODEL_DIR = Path(os.environ.get("CVUNET_MODEL_DIR", Path.home() / ".cache/cvunet-matting/models"))
RUN_ID = secrets.token_hex(4)
PG_NAME = f"cvunet_test_{RUN_ID}"
# Not in the unit tier: what needs a server, a process stack or a browser, and the real ISNet (its
# weights are a download, and each photo takes it half a minute on two loaded cores).
NOT_UNIT = ("services", "stack", "browser", "compose", "model")
# A test that uses the fixture gets the marker: the fixtures say what a test needs, not a list by hand.
MARKED_BY_FIXTURE = {"services": pytest.mark.services, "real_model_path": pytest.mark.model}
# Where a run that claimed nothing points its Redis and Postgres URLs: nothing listens on port 1, so a
# unit test that reaches for either fails at once, whether or not the shared servers are running.
NOWHERE = "127.0.0.1:1"
TMP_ROOT: Path | None = None  # made in pytest_configure, by each process that runs tests
REDIS_DB: int | None = None  # claimed in pytest_collection_finish when the run selects a service test
CLAIM_ERROR: str | None = None  # why it could not be claimed: the service tests fail with it


def is_xdist_controller(config) -> bool:
    """The process that only hands tests to pytest-xdist's workers: it runs none, so claims nothing."""
    return not os.environ.get("PYTEST_XDIST_WORKER") and (getattr(config.option, "numprocesses", 0) or 0) > 0


def tiny_model_path() -> Path:
    assert TMP_ROOT is not None, "asked for before pytest_configure"
    return TMP_ROOT / "models" / "tiny-cvunet.onnx"


def point_at(redis_url: str, database_url: str) -> None:
    os.environ.update({"CVUNET_REDIS_URL": redis_url, "CVUNET_DATABASE_URL": database_url})


def pytest_configure(config):
    # Before collection: no test module has imported cvunet_matting, so no setting is read yet.
    global TMP_ROOT
    if is_xdist_controller(config):
        return
    TMP_ROOT = Path(tempfile.mkdtemp(prefix=f"cvunet-test-{RUN_ID}-"))
    os.environ.update(
        {
            "CVUNET_DATA_DIR": str(TMP_ROOT / "data"),
            "CVUNET_MODEL_DIR": str(REAL_MODEL_DIR),
            "CVUNET_MODEL": str(tiny_model_path()),  # built by the tiny_model fixture, when first needed
            "CVUNET_ALLOWED_ROOTS": str(TMP_ROOT / "incoming"),
            "CVUNET_SECRET_KEY": "test-secret",
            "CVUNET_METRICS_ADDR": "127.0.0.1",
        }
    )
    point_at(f"redis://{NOWHERE}/0", f"postgresql://postgres@{NOWHERE}/{PG_NAME}")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKED_BY_FIXTURE.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        if not any(item.get_closest_marker(name) for name in NOT_UNIT):
            item.add_marker(pytest.mark.unit)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Claim this run's Redis database when a selected test needs services (each xdist worker collects
    the same selection, so each claims its own), before any test runs and so before settings are read."""
    if TMP_ROOT is None or session.config.option.collectonly:
        return
    if any(item.get_closest_marker("services") for item in session.items):
        claim_services()


def claim_services() -> None:
    global REDIS_DB, CLAIM_ERROR
    settings_unread_or_fail()
    try:
        REDIS_DB = support.claim_redis_db(RUN_ID, PG_NAME)
    except (redis.RedisError, RuntimeError) as error:  # the unit tests still run; the others fail on it
        CLAIM_ERROR = f"no Redis database claimed for this run: {error}"
        return
    point_at(f"redis://127.0.0.1:6379/{REDIS_DB}", f"postgresql://postgres@127.0.0.1:5432/{PG_NAME}")


def settings_unread_or_fail() -> None:
    """The URLs are about to change: a setting read during collection would keep the old ones."""
    from cvunet_matting.config import get_settings

    if get_settings.cache_info().currsize or "celeryconfig" in sys.modules:
        raise pytest.UsageError("settings were read while the tests were collected: read them in a test or fixture")


def pytest_sessionfinish(session, exitstatus):
    if TMP_ROOT is None:
        return
    if REDIS_DB is not None:
        support.release_redis_db(REDIS_DB, RUN_ID)
        support.drop_database(PG_NAME)
    if exitstatus == 0:
        shutil.rmtree(TMP_ROOT, ignore_errors=True)
    else:  # the workers' logs are what explains a failure
        print(f"\nkept for the failure: {TMP_ROOT} (worker logs in logs/)")


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return TMP_ROOT


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    path = REAL_MODEL_DIR / "isnet-fp16.onnx"
    if not path.exists():
        pytest.fail(f"{path} missing: run `make model` first (the CI script does)")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny CV-UNet-shaped model, CVUNET_MODEL here, built by the first test that needs it."""
    return support.build_tiny_model(tiny_model_path())


@pytest.fixture(scope="session")
def services(tiny_model) -> int:
    """This run's Redis database number: a test that uses this fixture, directly or through another, is
    marked `services`. Any worker such a test starts loads CVUNET_MODEL, so the tiny model is built."""
    if REDIS_DB is None:
        pytest.fail(CLAIM_ERROR or "services requested at run time: name the fixture in the test", pytrace=False)
    return REDIS_DB


@pytest.fixture(scope="session")
def database(services):
    """This run's own Postgres database, schema applied."""
    support.create_database(PG_NAME)
    from cvunet_matting import db
    from cvunet_matting.db import schema

    schema.upgrade()
    yield PG_NAME
    db.close_pool()


def truncate_pipeline_tables(db, attempts: int = 5) -> None:
    """TRUNCATE takes every table's exclusive lock one by one: a transaction of the previous test's
    still-exiting thread or process that reads two of them can deadlock with it, and Postgres then
    cancels the TRUNCATE (seen once in CI). Waiting a moment and taking the locks again succeeds."""
    for attempt in range(1, attempts + 1):
        try:
            with db.transaction() as cur:
                cur.execute("TRUNCATE batches, chunks, tasks, results CASCADE")
            return
        except psycopg2.errors.DeadlockDetected:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


@pytest.fixture
def clean_state(database):
    """Empty tables, Redis database and data folder before a pipeline test."""
    from cvunet_matting import db

    truncate_pipeline_tables(db)
    support.redis().flushdb()
    shutil.rmtree(TMP_ROOT / "data", ignore_errors=True)
    yield


@pytest.fixture
def app(clean_state):
    """The web app with its default settings, on a clean slate (a module that needs others makes its own)."""
    from cvunet_matting.web import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def alice(database):
    """A user with a name of their own (users outlive clean_state: each test gets a new one)."""
    return support.make_user(prefix="alice")


@pytest.fixture
def worker_factory(database):
    """Start real Celery worker processes (CPU); all are killed at the end of the test."""
    started = []

    def start(name: str = "cpu0@%h", args: tuple[str, ...] = (), **env):
        proc = support.start_worker(name, TMP_ROOT / "logs", env, args=args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        support.kill_group(proc)
