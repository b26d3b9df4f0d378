"""Reading the pipeline's Postgres rows, and settings with overrides, for tests that submit work."""

from __future__ import annotations

import os
import uuid

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


def claimed_chunk(count: int, published: bool = False) -> tuple[uuid.UUID, list[dict]]:
    """A batch submitted a minute ago whose one chunk of `count` rows its dispatcher has claimed
    (writes.claim_chunk) and, when `published`, marked published: none of its rows is in Redis, as a
    dispatcher leaves it before its messages go out, or as a Redis that lost them leaves it after."""
    from cvunet_matting import db
    from cvunet_matting.db import writes

    batch_id = uuid.uuid4()
    rows = [
        {
            "id": uuid.uuid4(),
            "batch_id": batch_id,
            "chunk": 0,
            "position": i,
            "filename": f"{i}.png",
            "input_key": f"k{i}",
            "options": {},
            "output_path": f"o/{i}.png",
        }
        for i in range(count)
    ]
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "test", count, {}, "o", chunks=1)
        writes.create_tasks(cur, rows)
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute' WHERE batch_id = %s", (batch_id,))
        assert writes.claim_chunk(cur, batch_id) == 0
        if published:
            writes.chunk_published(cur, batch_id, 0)
    return batch_id, rows
