"""Shared fixtures: a private Redis database and Postgres database per test process, tiny and real models.

The environment is set here, before any cvunet_matting module reads its settings. Under pytest-xdist
each worker process claims its own; the controller, which runs no test, claims nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from tests import support

REAL_MODEL_DIR = Path(os.environ.get("CVUNET_MODEL_DIR", Path.home() / ".cache/cvunet-matting/models"))
RUN_ID = secrets.token_hex(4)
PG_NAME = f"cvunet_test_{RUN_ID}"
TMP_ROOT: Path
REDIS_DB: int | None = None  # claimed in pytest_configure, by each process that runs tests


def is_xdist_controller(config) -> bool:
    """The process that only hands tests to pytest-xdist's workers: it runs none, so claims nothing."""
    return not os.environ.get("PYTEST_XDIST_WORKER") and (getattr(config.option, "numprocesses", 0) or 0) > 0


def pytest_configure(config):
    # Before collection: no test module has imported cvunet_matting, so no setting is read yet.
    global TMP_ROOT, REDIS_DB
    if is_xdist_controller(config):
        return
    TMP_ROOT = Path(tempfile.mkdtemp(prefix=f"cvunet-test-{RUN_ID}-"))
    REDIS_DB = support.claim_redis_db(RUN_ID, PG_NAME)
    os.environ.update(
        {
            "CVUNET_DATA_DIR": str(TMP_ROOT / "data"),
            "CVUNET_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "CVUNET_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{PG_NAME}",
            "CVUNET_MODEL_DIR": str(REAL_MODEL_DIR),
            "CVUNET_MODEL": str(support.build_tiny_model(TMP_ROOT / "models" / "tiny-cvunet.onnx")),
            "CVUNET_ALLOWED_ROOTS": str(TMP_ROOT / "incoming"),
            "CVUNET_SECRET_KEY": "test-secret",
            "CVUNET_METRICS_ADDR": "127.0.0.1",
        }
    )


def pytest_sessionfinish(session, exitstatus):
    if REDIS_DB is None:
        return
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
def database():
    """This run's own Postgres database, schema applied."""
    support.create_database(PG_NAME)
    from cvunet_matting import db
    from cvunet_matting.db import schema

    schema.upgrade()
    yield PG_NAME
    db.close_pool()


@pytest.fixture
def clean_state(database):
    """Empty tables, Redis database and data folder before a pipeline test."""
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("TRUNCATE batches, chunks, tasks, results CASCADE")
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

    def start(name: str = "cpu0@%h", **env):
        proc = support.start_worker(name, TMP_ROOT / "logs", env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        support.kill_group(proc)
