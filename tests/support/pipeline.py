"""Reading the pipeline's Postgres rows, and settings with overrides, for tests that submit work."""

from __future__ import annotations

import os

from .waiting import wait_until


def rows_of(batch_id: str) -> list[dict]:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return reads.batch_tasks(cur, batch_id)


def batch_row(batch_id: str) -> dict:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return reads.get_batch(cur, batch_id)


def task_row(task_id: str) -> dict:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


def wait_batch(batch_id: str, timeout: float = 120) -> dict:
    """The batch's row once it is done."""
    return wait_until(
        lambda: (b := batch_row(batch_id))["state"] == "done" and b, timeout, message=f"batch {batch_id} not done"
    )


def wait_task(task_id: str, state: str = "success", timeout: float = 60) -> dict:
    """The task's row once it is in `state`."""
    return wait_until(
        lambda: (r := task_row(task_id))["state"] == state and r, timeout, message=f"task {task_id} not {state}"
    )


def settings(**overrides):
    """This run's settings (from the environment) with some values changed."""
    from cvunet_matting.config import load_settings

    return load_settings({**os.environ, **{k: str(v) for k, v in overrides.items()}})
