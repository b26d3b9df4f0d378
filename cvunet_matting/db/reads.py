"""Read-only questions about batches, tasks and results, for the web, the CLI and the tasks."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .rows import BatchCounts, BatchRow, KeyRow, ResultRow, TaskRow, UserRow

PAGE_SIZE = 25


def find_result(cur, idem_key: str) -> ResultRow | None:
    cur.execute(*result_query(idem_key))
    return cur.fetchone()


def result_query(idem_key: str) -> tuple[str, tuple]:
    """find_result's query, for a caller that sends it after a write in the same round trip."""
    return "SELECT * FROM results WHERE idem_key = %s", (idem_key,)


def first_row(cur, query: tuple[str, tuple]) -> dict | None:
    """The first row of a query given as (sql, params)."""
    cur.execute(*query)
    return cur.fetchone()


def task_wanted(cur, task_id) -> bool | None:
    """Whether the task's row still wants a result (not deleted, not expired); None: no such row."""
    row = first_row(cur, wanted_query(task_id))
    return None if row is None else bool(row["wanted"])


def wanted_query(task_id) -> tuple[str, tuple]:
    """task_wanted's query (one row, `wanted`, or none), for a caller that sends it after a write in the
    same round trip: a run's end asks it once its files are written (tasks.finish_run). Two columns."""
    return "SELECT expired_at IS NULL AND deleted_at IS NULL AS wanted FROM tasks WHERE id = %s", (task_id,)


def get_task(cur, task_id) -> TaskRow | None:
    cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,))
    return cur.fetchone()


def get_batch(cur, batch_id) -> BatchRow | None:
    cur.execute("SELECT * FROM batches WHERE id = %s", (batch_id,))
    return cur.fetchone()


def batch_counts(cur, batch_id) -> BatchCounts:
    return many_batch_counts(cur, [batch_id])[batch_id]


def many_batch_counts(cur, batch_ids: list) -> dict[Any, BatchCounts]:
    """Each batch's tasks by outcome (success, failure, pending: the rest), in one query."""
    cur.execute(
        "SELECT batch_id, state, count(*) AS n FROM tasks WHERE batch_id = ANY(%s::uuid[]) GROUP BY batch_id, state",
        ([str(b) for b in batch_ids],),
    )
    by_batch: dict[str, dict[str, int]] = {str(b): {} for b in batch_ids}
    for row in cur.fetchall():
        by_batch[str(row["batch_id"])][row["state"]] = row["n"]
    return {
        b: {
            "success": by_batch[str(b)].get("success", 0),
            "failure": by_batch[str(b)].get("failure", 0),
            "pending": sum(n for s, n in by_batch[str(b)].items() if s not in {"success", "failure"}),
        }
        for b in batch_ids
    }


def batch_tasks(cur, batch_id, chunk: int | None = None) -> list[TaskRow]:
    if chunk is None:
        cur.execute("SELECT * FROM tasks WHERE batch_id = %s ORDER BY position", (batch_id,))
    else:
        cur.execute("SELECT * FROM tasks WHERE batch_id = %s AND chunk = %s ORDER BY position", (batch_id, chunk))
    return cur.fetchall()


def history(cur, page: int = 1, state: str | None = None, per_page: int = PAGE_SIZE) -> tuple[list[TaskRow], int]:
    """A page of everyone's tasks (task_listing), counted from page 1."""
    return task_listing(cur, None, state, (max(page, 1) - 1) * per_page, per_page)


def count_refused(cur, batch_id=None) -> int:
    """Failed tasks whose input was refused for what it is, optionally in one batch."""
    sql = "SELECT count(*) AS n FROM tasks WHERE state = 'failure' AND error_code = 'refused'"
    if batch_id:
        sql += " AND batch_id = %(batch)s"
    cur.execute(sql, {"batch": batch_id})
    return cur.fetchone()["n"]


def requeue_candidates(
    cur, failed: bool, stuck_seconds: int | None, batch_id=None, include_refused: bool = False
) -> list[TaskRow]:
    """Failed tasks and/or tasks not finished after `stuck_seconds`, optionally in one batch.

    Inputs refused for what they are (truncated, not an image...) fail the same way every time:
    they are left out unless asked for. Tasks their owner cancelled are always left out (their owner
    may retry them), and so are files refused on arrival (nothing was stored to run) and expired ones
    (retention removed their inputs)."""
    clauses = []
    if failed:
        refused = "" if include_refused else " AND error_code IS DISTINCT FROM 'refused'"
        clauses.append(
            f"(state = 'failure' AND error_code IS DISTINCT FROM 'cancelled' AND input_key <> ''"
            f" AND expired_at IS NULL{refused})"
        )
    if stuck_seconds is not None:
        on_its_way = f"EXISTS (SELECT 1 FROM chunks c WHERE {_ON_ITS_WAY})"  # noqa: S608 (fixed text)
        clauses.append(
            "(state IN ('pending', 'started', 'retry') AND event_at < now() - make_interval(secs => %(stuck)s)"
            f" AND NOT {on_its_way})"
        )
    if not clauses:
        return []
    sql = f"SELECT * FROM tasks WHERE ({' OR '.join(clauses)})"  # noqa: S608 (fixed clauses, values bound)
    if batch_id:
        sql += " AND batch_id = %(batch)s"
    # Locked: a task its owner deletes meanwhile is re-read once the delete commits, and left out.
    sql += " ORDER BY created_at, position FOR UPDATE"
    return _all(cur, sql, {"stuck": stuck_seconds, "batch": batch_id, "grace": DISPATCH_GRACE_S})


# A chunk claimed for dispatch (writes.claim_chunk) is published message by message: its rows stay
# pending with their submission's event_at, and reach Redis one by one (a 200-image chunk took 5.3 s
# on a loaded host, longer than reconcile's settle). Until its dispatcher marks it published
# (writes.chunk_published) its rows are the dispatcher's, neither lost nor orphaned. The grace bounds
# that: a dispatcher killed mid-publish never marks it, and its chunk is then recovered like any other.
# 120 s is far longer than any publish (seconds), and only delays the recovery of that rare death.
# Not a grace alone from the claim: the messages of a chunk published a moment ago that Redis then
# loses (a restart without its data) are still republished within seconds (tests/test_faults.py).
DISPATCH_GRACE_S = 120
# Alias `c`: the task's chunk. A chunk claimed before migration 014 has no dispatched_at: published.
_PUBLISHED = (
    "(c.published_at IS NOT NULL OR c.dispatched_at IS NULL"
    " OR c.dispatched_at < now() - make_interval(secs => %(grace)s))"
)

# The task (`tasks`, unaliased) belongs to a chunk still waiting in PostgreSQL, or one its dispatcher is
# publishing: its row is pending by design, not stuck, whatever its age (a batch's last chunks wait for
# the first to finish). `requeue --stuck-for` leaves it to the dispatcher, as reconcile does: publishing
# it too would run it twice, the second time outside its chunk's chord.
_ON_ITS_WAY = "c.batch_id = tasks.batch_id AND c.idx = tasks.chunk AND (c.state = 'queued' OR NOT " + _PUBLISHED + ")"

# Tasks Postgres still expects to run. Tasks of chunks not yet dispatched are waiting in PostgreSQL
# by design, not lost, and those of a chunk being published are on their way; a task recorded a
# moment ago may not have reached Redis yet.
_UNFINISHED = (
    "FROM tasks t LEFT JOIN chunks c ON c.batch_id = t.batch_id AND c.idx = t.chunk "
    "WHERE t.state IN ('pending', 'started', 'retry') AND (c.state IS NULL OR c.state <> 'queued') "
    f"AND {_PUBLISHED} AND t.event_at < now() - make_interval(secs => %(settle)s)"
)


def unfinished(cur, settle_s: float = 0, ids: Collection[str] | None = None) -> list[TaskRow]:
    """Tasks Postgres still expects to run, untouched for `settle_s`: the candidates for `reconcile`
    (only those of `ids`, when given)."""
    sql = f"SELECT t.* {_UNFINISHED}"  # noqa: S608 (no user input)
    if ids is not None:
        sql += " AND t.id = ANY(%(ids)s::uuid[])"
    params = {"settle": settle_s, "grace": DISPATCH_GRACE_S, "ids": list(ids or ())}
    return _all(cur, sql + " ORDER BY t.created_at, t.position", params)


def unfinished_ids(cur, settle_s: float = 0) -> set[str]:
    """The ids of `unfinished`'s tasks, alone: reconcile compares every one of them with what Redis
    holds every few seconds, and needs whole rows only for the few it finds lost (a batch's dispatched
    chunks are hundreds of rows, their options decoded each time, for nothing)."""
    params = {"settle": settle_s, "grace": DISPATCH_GRACE_S}
    cur.execute(f"SELECT t.id {_UNFINISHED}", params)  # noqa: S608 (no user input)
    return {str(row["id"]) for row in cur.fetchall()}


def orphan_chunks(cur, settle_s: float = 0) -> list[dict]:
    """Dispatched chunks whose tasks all ended over `settle_s` ago: their chord callback was lost. Not
    one still being dispatched: a chunk with nothing to run is completed by its dispatcher itself."""
    return _all(
        cur,
        f"SELECT c.batch_id, c.idx FROM chunks c WHERE c.state = 'dispatched' AND {_PUBLISHED} AND NOT EXISTS ("  # noqa: S608 (fixed)
        " SELECT 1 FROM tasks t WHERE t.batch_id = c.batch_id AND t.chunk = c.idx AND (t.state IN"
        " ('pending', 'started', 'retry') OR t.event_at >= now() - make_interval(secs => %(settle)s)))"
        " ORDER BY c.batch_id, c.idx",
        {"settle": settle_s, "grace": DISPATCH_GRACE_S},
    )


def unfinalized_batches(cur, stale_s: float) -> list[BatchRow]:
    """Batches whose every chunk is done but which were never finalized, or whose finalizer died
    (finalizing for longer than `stale_s`)."""
    return _all(
        cur,
        "SELECT b.* FROM batches b WHERE (b.state = 'running' OR (b.state = 'finalizing'"
        " AND b.finalizing_since < now() - make_interval(secs => %s))) AND NOT EXISTS ("
        " SELECT 1 FROM chunks c WHERE c.batch_id = b.id AND c.state <> 'done') ORDER BY b.created_at",
        (stale_s,),
    )


def undispatched_batches(cur) -> list[dict]:
    """Running batches with chunks still queued but none dispatched: the chain to the next chunk broke."""
    return _all(
        cur,
        "SELECT b.id FROM batches b WHERE b.state = 'running'"
        " AND EXISTS (SELECT 1 FROM chunks c WHERE c.batch_id = b.id AND c.state = 'queued')"
        " AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_id = b.id AND c.state = 'dispatched')"
        " ORDER BY b.created_at",
    )


def listed_count(cur, batch_id) -> int:
    """Rows a folder batch's listing has recorded so far: where a redelivered listing resumes."""
    cur.execute("SELECT count(*) AS n FROM tasks WHERE batch_id = %s", (batch_id,))
    return cur.fetchone()["n"]


def chunk_count(cur, batch_id) -> int:
    cur.execute("SELECT count(*) AS n FROM chunks WHERE batch_id = %s", (batch_id,))
    return cur.fetchone()["n"]


def dispatched_chunks(cur, batch_id) -> int:
    cur.execute("SELECT count(*) AS n FROM chunks WHERE batch_id = %s AND state = 'dispatched'", (batch_id,))
    return cur.fetchone()["n"]


def listing_batches(cur, settle_s: float = 0) -> list[dict]:
    """Folder batches still being listed, created over `settle_s` ago: reconcile checks their listing task."""
    return _all(
        cur,
        "SELECT id FROM batches WHERE state = 'listing' AND created_at < now() - make_interval(secs => %s)"
        " ORDER BY created_at",
        (settle_s,),
    )


def storage_failures(cur, max_requeues: int) -> list[TaskRow]:
    """Tasks that failed because storage could not be read or written, not yet requeued too often."""
    return _all(
        cur,
        "SELECT * FROM tasks WHERE state = 'failure' AND error_code = 'storage' AND requeues < %s"
        " AND expired_at IS NULL ORDER BY created_at, position",
        (max_requeues,),
    )


def tasks_past_retention(cur, days: int, limit: int) -> list[dict]:
    """Finished tasks not yet expired whose end is older than `days` days, oldest first."""
    return _all(
        cur,
        "SELECT id, batch_id, input_key, output_path, options->>'bg_image' AS bg_image FROM tasks"
        " WHERE expired_at IS NULL AND finished_at IS NOT NULL"
        " AND finished_at < now() - make_interval(days => %s) ORDER BY finished_at LIMIT %s",
        (days, limit),
    )


def inputs_no_longer_used(cur, keys: set[str]) -> set[str]:
    """Of these input keys, those no kept (unexpired) task reads, as its input or as the background
    image its options name (bg_image; index tasks_bg_image, migration 013)."""
    if not keys:
        return set()
    cur.execute(
        "SELECT input_key AS key FROM tasks WHERE input_key = ANY(%(keys)s) AND expired_at IS NULL"
        " UNION SELECT options->>'bg_image' FROM tasks WHERE options->>'bg_image' = ANY(%(keys)s)"
        " AND expired_at IS NULL",
        {"keys": list(keys)},
    )
    return keys - {row["key"] for row in cur.fetchall()}


def known_tasks(cur, task_ids: set[str]) -> set[str]:
    """Of these task ids, those with a row (whatever its state: rows are never removed)."""
    if not task_ids:
        return set()
    cur.execute("SELECT id FROM tasks WHERE id = ANY(%s::uuid[])", (list(task_ids),))
    return {str(row["id"]) for row in cur.fetchall()}


def unpurged_tasks(cur, settle_s: float, limit: int, owner_id=None) -> list[dict]:
    """Deleted tasks whose files were not seen removed (the web process that deleted them died first);
    only one owner's with `owner_id`."""
    return _all(
        cur,
        "SELECT id, batch_id, input_key, output_path FROM tasks WHERE deleted_at IS NOT NULL AND purged_at IS NULL"
        " AND deleted_at < now() - make_interval(secs => %s) AND (%s::bigint IS NULL OR owner_id = %s)"
        " ORDER BY deleted_at LIMIT %s",
        (settle_s, owner_id, owner_id, limit),
    )


def unpurged_batches(cur, settle_s: float, owner_id=None) -> list[BatchRow]:
    return _all(
        cur,
        "SELECT * FROM batches WHERE deleted_at IS NOT NULL AND purged_at IS NULL"
        " AND deleted_at < now() - make_interval(secs => %s) AND (%s::bigint IS NULL OR owner_id = %s)",
        (settle_s, owner_id, owner_id),
    )


def batches_past_retention(cur, days: int) -> list[BatchRow]:
    """Finished batches not yet expired, older than `days` days, none of whose tasks is still kept."""
    return _all(
        cur,
        "SELECT * FROM batches b WHERE b.expired_at IS NULL AND b.state = 'done'"
        " AND b.finished_at < now() - make_interval(days => %s)"
        " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.batch_id = b.id AND t.expired_at IS NULL)",
        (days,),
    )


def archive_page(cur, batch_id, after: int, limit: int = 500) -> list[dict]:
    """The next `limit` rows of a batch after `position`, with only what its manifest and ZIP need."""
    return _all(
        cur,
        "SELECT id, position, filename, state, error, output_path, width, height, confidence, rendered_from FROM tasks"
        " WHERE batch_id = %s AND position > %s ORDER BY position LIMIT %s",
        (batch_id, after, limit),
    )


def _all(cur, sql: str, params=None) -> list[Any]:
    cur.execute(sql, params)
    return cur.fetchall()


def not_started(cur, batch_id=None, task_id=None) -> list[str]:
    """The ids of a batch's tasks (or of the one task) that no worker has started: pending or retrying."""
    column, value = ("batch_id", batch_id) if batch_id is not None else ("id", task_id)
    cur.execute(
        f"SELECT id FROM tasks WHERE {column} = %s AND state IN ('pending', 'retry')",  # noqa: S608 (fixed names)
        (value,),
    )
    return [str(row["id"]) for row in cur.fetchall()]


def lock_task(cur, task_id) -> TaskRow | None:
    """The task row, locked until the transaction ends (one retry at a time)."""
    cur.execute("SELECT * FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
    return cur.fetchone()


def owned_undeleted(cur, owner_id) -> tuple[list, list]:
    """An owner's batches and the images sent on their own, not deleted: (batch ids, task ids)."""
    cur.execute("SELECT id FROM batches WHERE owner_id = %s AND deleted_at IS NULL ORDER BY created_at", (owner_id,))
    batches = [row["id"] for row in cur.fetchall()]
    cur.execute(
        "SELECT id FROM tasks WHERE owner_id = %s AND batch_id IS NULL AND deleted_at IS NULL ORDER BY created_at",
        (owner_id,),
    )
    return batches, [row["id"] for row in cur.fetchall()]


def lock_batch_tasks(cur, batch_id) -> list[TaskRow]:
    """A batch's tasks, locked until the transaction ends (in the order a retry takes them: tasks, then
    their batch, so a retry and a delete of the same batch never deadlock)."""
    return _all(cur, "SELECT * FROM tasks WHERE batch_id = %s ORDER BY position FOR UPDATE", (batch_id,))


def lock_batch(cur, batch_id) -> BatchRow | None:
    cur.execute("SELECT * FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
    return cur.fetchone()


def failed_items(cur, batch_id, limit: int) -> list[TaskRow]:
    """A batch's first failed images, in submission order (the tasks_batch index, a short walk)."""
    return _all(
        cur,
        "SELECT * FROM tasks WHERE batch_id = %s AND state = 'failure' ORDER BY position LIMIT %s",
        (batch_id, limit),
    )


# The orders a batch's page can list its tasks in: submission, or the least sure cut-outs first (those
# without a score, not finished or failed, last).
ITEM_ORDERS = {"position": "position", "doubt": "confidence ASC NULLS LAST, position"}


def batch_items(cur, batch_id, offset: int = 0, limit: int = 100, order: str = "position") -> list[TaskRow]:
    """One page of a batch's tasks, in submission order or by `order` (a key of ITEM_ORDERS)."""
    cur.execute(
        f"SELECT * FROM tasks WHERE batch_id = %s ORDER BY {ITEM_ORDERS[order]} LIMIT %s OFFSET %s",  # noqa: S608
        (batch_id, limit, offset),
    )
    return cur.fetchall()


def state_counts(cur) -> dict[str, int]:
    """Tasks per state (index-only scan on tasks_state): for the /metrics scrape."""
    cur.execute("SELECT state, count(*) AS n FROM tasks GROUP BY state")
    return {row["state"]: row["n"] for row in cur.fetchall()}


def waiting_ahead(cur, created_at) -> int:
    """Tasks still waiting for a worker that were submitted before `created_at` (the queue is FIFO)."""
    cur.execute(
        "SELECT count(*) AS n FROM tasks WHERE state IN ('pending', 'retry') AND created_at < %s", (created_at,)
    )
    return cur.fetchone()["n"]


def recent_pace(cur, sample: int = 50) -> dict:
    """How many workers finished the latest `sample` matted images, and their median seconds each.

    Walks the created_at index from the newest task: no scan of the whole history."""
    cur.execute(
        "SELECT count(DISTINCT worker) AS workers, percentile_cont(0.5) WITHIN GROUP "
        "(ORDER BY extract(epoch FROM finished_at - started_at)) AS seconds FROM "
        "(SELECT worker, started_at, finished_at FROM tasks WHERE state = 'success' AND NOT reused "
        "AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY created_at DESC LIMIT %s) recent",
        (sample,),
    )
    return cur.fetchone()


# ------------------------------------------------------------------ accounts (migration 004)


def get_user(cur, user_id) -> UserRow | None:
    cur.execute("SELECT * FROM users WHERE id = %s", (user_id,))
    return cur.fetchone()


def get_user_by_name(cur, name: str) -> UserRow | None:
    cur.execute("SELECT * FROM users WHERE name = %s", (name,))
    return cur.fetchone()


def user_by_key_hash(cur, key_hash: str) -> UserRow | None:
    """The enabled user an unrevoked API key belongs to, with the key's id as `key_id` and whether it
    reads only /metrics as `key_metrics_only`."""
    cur.execute(
        "SELECT u.*, k.id AS key_id, k.metrics_only AS key_metrics_only FROM api_keys k "
        "JOIN users u ON u.id = k.user_id "
        "WHERE k.key_hash = %s AND k.revoked_at IS NULL AND NOT u.disabled",
        (key_hash,),
    )
    return cur.fetchone()


def list_users(cur) -> list[UserRow]:
    return _all(
        cur,
        "SELECT u.*, (SELECT count(*) FROM api_keys k WHERE k.user_id = u.id AND k.revoked_at IS NULL) AS keys "
        "FROM users u ORDER BY u.name",
    )


def count_users(cur) -> int:
    cur.execute("SELECT count(*) AS n FROM users")
    return cur.fetchone()["n"]


def list_keys(cur, user_id) -> list[KeyRow]:
    return _all(cur, "SELECT * FROM api_keys WHERE user_id = %s ORDER BY created_at", (user_id,))


def task_listing(cur, owner_id, state: str | None, offset: int, limit: int) -> tuple[list[TaskRow], int]:
    """Tasks newest first from `offset`, and their total: one owner's, or everyone's (owner None),
    each then with its owner's name (owner_name) for the admin who reads it."""
    clauses, params = ["tasks.deleted_at IS NULL"], []
    if owner_id is not None:
        clauses, params = [*clauses, "tasks.owner_id = %s"], [owner_id]
    if state:
        clauses, params = [*clauses, "tasks.state = %s"], [*params, state]
    where = f"WHERE {' AND '.join(clauses)}"
    cur.execute(f"SELECT count(*) AS n FROM tasks {where}", params)  # noqa: S608 (fixed clauses, values bound)
    total = cur.fetchone()["n"]
    owners = ", users.name AS owner_name" if owner_id is None else ""
    joined = " LEFT JOIN users ON users.id = tasks.owner_id" if owner_id is None else ""
    sql = (
        f"SELECT tasks.*{owners} FROM tasks{joined} {where}"  # noqa: S608 (fixed clauses, values bound)
        " ORDER BY tasks.created_at DESC, tasks.position LIMIT %s OFFSET %s"
    )
    cur.execute(sql, [*params, limit, offset])
    return cur.fetchall(), total


def batch_listing(cur, owner_id, offset: int, limit: int) -> tuple[list[BatchRow], int]:
    """Batches newest first from `offset`, and their total: one owner's, or everyone's (owner None),
    each then with its owner's name (owner_name) for the admin who reads it."""
    where, params = "WHERE batches.deleted_at IS NULL", []
    if owner_id is not None:
        where, params = f"{where} AND batches.owner_id = %s", [owner_id]
    cur.execute(f"SELECT count(*) AS n FROM batches {where}", params)  # noqa: S608 (fixed clauses, values bound)
    total = cur.fetchone()["n"]
    owners, joined = (
        (", users.name AS owner_name", " LEFT JOIN users ON users.id = batches.owner_id")
        if owner_id is None
        else ("", "")
    )
    sql = (
        f"SELECT batches.*{owners} FROM batches{joined} {where}"  # noqa: S608 (fixed clauses, values bound)
        " ORDER BY batches.created_at DESC, batches.id LIMIT %s OFFSET %s"
    )
    cur.execute(sql, [*params, limit, offset])
    return cur.fetchall(), total


def owner_load(cur, owner_id) -> dict:
    """An owner's images in flight and files submitted since midnight UTC (quota checks). Inputs a worker
    refused for what they are cost no model time and stop counting; files refused on arrival (nothing
    stored, input_key '') keep counting: else each batch could add rows without limit at the cost of
    one image. Each retry since midnight counts as one more file: it runs the image again."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE state IN ('pending', 'started', 'retry')) AS in_flight, "
        "count(*) FILTER (WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        " AND (error_code IS DISTINCT FROM 'refused' OR input_key = '')) + (SELECT count(*) FROM task_retries"
        " WHERE owner_id = %s AND retried_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
        " AS today FROM tasks WHERE owner_id = %s",
        (owner_id, owner_id),
    )
    return cur.fetchone()
