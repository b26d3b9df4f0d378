"""The only writer of batch, chunk, task and result rows in PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection

from psycopg2.extras import Json, execute_values

from cvunet_matting.states import BatchState, TaskState

# Columns an event may set on a task row; anything else in an event is ignored.
EVENT_COLUMNS = (
    "state",
    "attempts",
    "worker",
    "error",
    "error_code",
    "idem_key",
    "model_version",
    "reused",
    "width",
    "height",
    "timings",
    "confidence",
    "started_at",
    "finished_at",
)


def create_batch(
    cur, batch_id, source: str, total: int, options: dict, output_dir: str, chunks: int, state: str = BatchState.RUNNING
) -> None:
    """A batch and its chunk rows; a folder batch starts 'listing', with none yet (see add_listed_chunk)."""
    cur.execute(
        "INSERT INTO batches (id, state, source, total, options, output_dir) VALUES (%s, %s, %s, %s, %s, %s)",
        (batch_id, state, source, total, Json(options), output_dir),
    )
    if chunks:
        execute_values(cur, "INSERT INTO chunks (batch_id, idx) VALUES %s", [(batch_id, i) for i in range(chunks)])


def add_listed_chunk(cur, batch_id, idx: int, rows: list[dict]) -> None:
    """A page of a folder batch's listing: its rows (owned as the batch is), one more chunk, a larger total."""
    create_tasks(cur, rows)
    cur.execute(
        "UPDATE tasks SET owner_id = (SELECT owner_id FROM batches WHERE id = %s) WHERE id = ANY(%s)",
        (batch_id, [r["id"] for r in rows]),
    )
    cur.execute("INSERT INTO chunks (batch_id, idx) VALUES (%s, %s)", (batch_id, idx))
    cur.execute("UPDATE batches SET total = total + %s WHERE id = %s", (len(rows), batch_id))


def refuse_listed(cur, refused: dict) -> None:
    """Listed files that could not be read (gone, turned into a link): failed at once, never queued."""
    for task_id, reason in refused.items():
        cur.execute(
            "UPDATE tasks SET state = 'failure', error_code = 'refused', error = %s, finished_at = now(),"
            " event_at = now() WHERE id = %s",
            (reason, task_id),
        )


def end_cancelled(cur, task_ids: list, reason: str) -> int:
    """Cancelled images that no worker has started fail at once, code `cancelled` (see cancelling)."""
    cur.execute(
        "UPDATE tasks SET state = 'failure', error_code = 'cancelled', error = %s, finished_at = now(),"
        " event_at = now() WHERE id = ANY(%s::uuid[]) AND state IN ('pending', 'retry')",
        (reason, [str(t) for t in task_ids]),
    )
    return cur.rowcount


def end_listing(cur, batch_id, error: str | None) -> int:
    """The listing is over: the batch runs on (under its row lock, see complete_chunk); returns
    how many of its chunks are not done yet."""
    cur.execute("SELECT state FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
    cur.execute(
        "UPDATE batches SET state = 'running', error = COALESCE(%s, error) WHERE id = %s AND state = 'listing'",
        (error, batch_id),
    )
    cur.execute("SELECT count(*) AS n FROM chunks WHERE batch_id = %s AND state <> 'done'", (batch_id,))
    return cur.fetchone()["n"]


def create_tasks(cur, rows: list[dict]) -> None:
    """Insert pending rows: id, batch_id, chunk, position, filename, input_key, options, output_path, and
    for a re-render the task it draws from (rendered_from)."""
    execute_values(
        cur,
        "INSERT INTO tasks (id, batch_id, chunk, position, filename, input_key, options, output_path, rendered_from)"
        " VALUES %s",
        [
            (
                r["id"],
                r.get("batch_id"),
                r.get("chunk"),
                r.get("position", 0),
                r["filename"],
                r["input_key"],
                Json(r["options"]),
                r["output_path"],
                r.get("rendered_from"),
            )
            for r in rows
        ],
        page_size=1000,
    )


def record_rendered(cur, task_id, width: int, height: int, confidence: float | None, timings: dict) -> None:
    """A task made whole on the web side (a re-render, services/rerendering.py): finished as it is
    recorded, in the transaction that created its row."""
    cur.execute(
        "UPDATE tasks SET state = 'success', worker = 'web', width = %s, height = %s, confidence = %s,"
        " timings = %s, started_at = now(), finished_at = now(), event_at = now() WHERE id = %s",
        (width, height, confidence, Json(timings), task_id),
    )


def fail_unrenderable(cur, reasons: dict) -> None:
    """A batch re-render's images with nothing to draw from (their source failed, or its files are
    gone): failed at once, code `no_matte`, never queued."""
    for task_id, reason in reasons.items():
        cur.execute(
            "UPDATE tasks SET state = 'failure', error_code = 'no_matte', error = %s, finished_at = now(),"
            " event_at = now() WHERE id = %s",
            (reason, task_id),
        )


def start_render(cur, task_id, worker: str) -> int | None:
    """A batch re-render's run begins on a bookkeeping worker: its attempts so far, this one counted
    (a run that never ended died with its worker); None when the task is final, deleted or expired."""
    cur.execute(
        "UPDATE tasks SET state = 'started', attempts = attempts + 1, worker = %s, started_at = now(),"
        " event_at = now() WHERE id = %s AND state IN ('pending', 'started', 'retry') AND expired_at IS NULL"
        " RETURNING attempts",
        (worker, task_id),
    )
    row = cur.fetchone()
    return row["attempts"] if row else None


def end_render(cur, task_id, outcome: dict) -> bool:
    """A batch re-render's end, success (width, height, confidence, timings) or failure (error_code,
    error): written once, by the run that ends the task first; False when another did, or it went."""
    cur.execute(
        "UPDATE tasks SET state = %(state)s, width = %(width)s, height = %(height)s, confidence = %(confidence)s,"
        " timings = %(timings)s, error = %(error)s, error_code = %(error_code)s, finished_at = now(),"
        " event_at = now() WHERE id = %(task_id)s AND state IN ('pending', 'started', 'retry')"
        " AND expired_at IS NULL RETURNING id",
        {
            "width": None,
            "height": None,
            "confidence": None,
            "error": None,
            "error_code": None,
            **{k: outcome.get(k) for k in ("state", "width", "height", "confidence", "error", "error_code")},
            "timings": Json(outcome["timings"]) if outcome.get("timings") else None,
            "task_id": outcome["task_id"],
        },
    )
    return cur.fetchone() is not None


def register_result(cur, task_id, idem_key: str, model_version: str, output_path: str, size, confidence) -> None:
    """A re-render's result, registered for reuse under the key the model worker would compute for its
    input and options (image/reuse_key.py): a later identical task copies it instead of running the
    model. The first result under a key stays the one reused, as with the worker's own."""
    cur.execute("UPDATE tasks SET idem_key = %s, model_version = %s WHERE id = %s", (idem_key, model_version, task_id))
    cur.execute(
        "INSERT INTO results (idem_key, output_path, task_id, width, height, confidence)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (idem_key) DO NOTHING",
        (idem_key, output_path, task_id, *size, confidence),
    )


def event_statements(event: dict) -> list[tuple[str, dict]]:
    """(sql, params) that apply one mirrored task event, unless a later event for the task was applied
    already, or the task was deleted or expired (a late event, replayed from a spool or sent by a
    stray run, never brings back a result its owner or retention removed)."""
    fields = {k: event[k] for k in EVENT_COLUMNS if k in event}
    if "timings" in fields:
        fields["timings"] = Json(fields["timings"])
    sets = ", ".join(f"{k} = %({k})s" for k in fields)
    if "attempts" in fields:
        sets = sets.replace("attempts = %(attempts)s", "attempts = GREATEST(attempts, %(attempts)s)")
    # A start never lands on a final row, however late: a second run can pass "finished already?" in
    # the milliseconds between the first run's end event and its result reaching Redis, and its start
    # (timed after that end) would turn a finished image back into a started one for good: reconcile
    # then republished it every 5 s and its batch never finished (seen in `make bench-worker`, 2026-12-06).
    # A task run again after it ended is set pending first (reset_for_requeue).
    # And a task's end is never lost to a start: the end goes out in the background while a second copy's
    # start, timed a moment later, can be written first (it is written with the run's result lookup); the
    # older end then failed `event_at <= at`, the row stayed `started` for good and its chord never
    # completed (`make bench-worker`, 2026-12-06, twice in 2,000 images). An end is written only by the run
    # that holds the task's finish claim (signals.mirror_end), so it wins over any start; a requeue sets the
    # row pending first, and a pending or retried row still takes events in time order.
    order = "event_at <= %(at)s"
    if event.get("state") == TaskState.STARTED:
        order += " AND state NOT IN ('success', 'failure')"
    elif event.get("state") in (TaskState.SUCCESS, TaskState.FAILURE):
        order = f"({order} OR state = 'started')"
    statements = [
        (
            f"UPDATE tasks SET {sets}, event_at = GREATEST(event_at, %(at)s)"  # noqa: S608
            f" WHERE id = %(task_id)s AND {order} AND expired_at IS NULL",
            {**fields, "at": event["at"], "task_id": event["task_id"]},
        )
    ]
    if event.get("result"):
        statements.append(
            (
                "INSERT INTO results (idem_key, output_path, task_id, width, height, confidence) "
                "SELECT %(idem_key)s, %(output_path)s, %(task_id)s, %(width)s, %(height)s, %(confidence)s "
                "WHERE EXISTS (SELECT 1 FROM tasks WHERE id = %(task_id)s AND expired_at IS NULL) "
                "ON CONFLICT (idem_key) DO NOTHING",
                {"confidence": None, **event["result"]},  # a spooled event of the version before has none
            )
        )
    return statements


def apply_events(cur, events: list[dict], then: tuple[str, tuple] | None = None) -> dict | None:
    """Apply events in order as one query: on an autocommit cursor, one round trip and one transaction.

    When every event is a start, the commit does not wait for the disk: such a row is rewritten by
    the task's next event anyway, and only a crash of Postgres itself could lose it.

    `then`, a read-only query (sql, params), runs after the events in the same round trip: its first
    row is returned (a run's start and its result lookup, see worker/image_job.py, cost one round
    trip where they cost two).
    """
    statements = [cur.mogrify(sql, params) for event in events for sql, params in event_statements(event)]
    if then is not None:
        statements.append(cur.mogrify(*then))
    if not statements:
        return None
    if all(event.get("state") == TaskState.STARTED for event in events):
        statements.insert(0, b"SET LOCAL synchronous_commit TO OFF")
    cur.execute(b";\n".join(statements))
    return cur.fetchone() if then is not None else None


def reset_for_requeue(cur, task_ids: Collection) -> None:
    """Back to pending before a re-publish; attempts and history of the error are kept."""
    cur.execute(
        "UPDATE tasks SET state = 'pending', event_at = now(), finished_at = NULL, requeues = requeues + 1 "
        "WHERE id = ANY(%s)",
        (list(task_ids),),
    )


def claim_chunk(cur, batch_id) -> int | None:
    """Mark the batch's next queued chunk dispatched and return its index (None: none left). Its
    `dispatched_at` starts reconcile's grace for a dispatch in progress (reads.DISPATCH_GRACE_S)."""
    cur.execute(
        "UPDATE chunks SET state = 'dispatched', dispatched_at = now() WHERE (batch_id, idx) = ("
        " SELECT batch_id, idx FROM chunks WHERE batch_id = %s AND state = 'queued'"
        " ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING idx",
        (batch_id,),
    )
    row = cur.fetchone()
    return row["idx"] if row else None


def chunk_published(cur, batch_id, idx: int) -> None:
    """Every image of a claimed chunk is in Redis: from now on reconcile compares its rows with Redis."""
    cur.execute("UPDATE chunks SET published_at = now() WHERE batch_id = %s AND idx = %s", (batch_id, idx))


def complete_chunk(cur, batch_id, idx: int) -> str:
    """Mark a chunk done: 'last' (the batch's last one), 'more', or 'already' for a repeated call
    (reconcile may restart a chunk whose own callback then arrives too)."""
    cur.execute(
        "UPDATE chunks SET state = 'done' WHERE batch_id = %s AND idx = %s AND state <> 'done' RETURNING idx",
        (batch_id, idx),
    )
    if cur.fetchone() is None:
        return "already"
    # Locked, so that this and the end of a folder's listing (end_listing) see each other's change.
    cur.execute("SELECT state FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
    batch = cur.fetchone()
    if batch is not None and batch["state"] == BatchState.LISTING:
        return "more"  # more chunks are on their way; end_listing finalizes if none is left
    cur.execute("SELECT count(*) AS n FROM chunks WHERE batch_id = %s AND state <> 'done'", (batch_id,))
    return "last" if cur.fetchone()["n"] == 0 else "more"


def claim_finalize(cur, batch_id, stale_s: float) -> bool:
    """Only one caller wins the right to finalize a batch; a claim older than `stale_s` (its
    finalizer died: the task's hard time limit has passed) may be taken over."""
    cur.execute(
        "UPDATE batches SET state = 'finalizing', finalizing_since = now() WHERE id = %s AND (state = 'running'"
        " OR (state = 'finalizing' AND finalizing_since < now() - make_interval(secs => %s))) RETURNING id",
        (batch_id, stale_s),
    )
    return cur.fetchone() is not None


def release_finalize(cur, batch_id) -> None:
    """A finalizer that could not write the batch's files lets its claim go: its retry takes it again."""
    cur.execute(
        "UPDATE batches SET state = 'running', finalizing_since = NULL WHERE id = %s AND state = 'finalizing'",
        (batch_id,),
    )


def finish_batch(cur, batch_id, zip_path: str | None, manifest_path: str | None, error: str | None = None) -> None:
    cur.execute(
        "UPDATE batches SET state = 'done', zip_path = %s, manifest_path = %s, error = %s, finished_at = now() "
        "WHERE id = %s",
        (zip_path, manifest_path, error, batch_id),
    )


def reopen_batches(cur, batch_ids: Collection) -> None:
    """A requeued item reopens its finished batch so the ZIP and manifest are rebuilt."""
    cur.execute("UPDATE batches SET state = 'running', finished_at = NULL WHERE id = ANY(%s)", (list(batch_ids),))


# ------------------------------------------------------------------ accounts (migration 004)


def create_user(cur, name: str, password_hash: str | None, is_admin: bool, quotas: dict) -> dict:
    cur.execute(
        "INSERT INTO users (name, password_hash, is_admin, max_in_flight, max_per_day, max_batch) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (name, password_hash, is_admin, *(quotas.get(k) for k in ("max_in_flight", "max_per_day", "max_batch"))),
    )
    return cur.fetchone()


USER_COLUMNS = ("password_hash", "is_admin", "disabled", "max_in_flight", "max_per_day", "max_batch")


def update_user(cur, user_id, **fields) -> None:
    """Set some of USER_COLUMNS; a change of password or a disable also ends every session."""
    fields = {k: v for k, v in fields.items() if k in USER_COLUMNS}
    if not fields:
        return
    sets = ", ".join(f"{k} = %({k})s" for k in fields)
    if "password_hash" in fields or fields.get("disabled"):
        sets += ", session_epoch = session_epoch + 1"
    cur.execute(f"UPDATE users SET {sets} WHERE id = %(id)s", {**fields, "id": user_id})  # noqa: S608


def end_sessions(cur, user_id) -> None:
    cur.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = %s", (user_id,))


def create_key(cur, user_id, prefix: str, key_hash: str, label: str, metrics_only: bool = False) -> dict:
    cur.execute(
        "INSERT INTO api_keys (user_id, prefix, key_hash, label, metrics_only) VALUES (%s, %s, %s, %s, %s) RETURNING *",
        (user_id, prefix, key_hash, label, metrics_only),
    )
    return cur.fetchone()


def revoke_key(cur, user_id, key_id) -> bool:
    cur.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE user_id = %s AND id = %s AND revoked_at IS NULL RETURNING id",
        (user_id, key_id),
    )
    return cur.fetchone() is not None


def key_used(cur, key_id) -> None:
    """Record a key's use, at most once a minute (no write on every request)."""
    cur.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (key_id,),
    )


def set_owner(cur, owner_id, batch_id=None, task_ids=()) -> None:
    """Give a just-created batch (and its tasks) or single tasks to their owner, in the creating transaction."""
    if batch_id is not None:
        cur.execute("UPDATE batches SET owner_id = %s WHERE id = %s", (owner_id, batch_id))
        cur.execute("UPDATE tasks SET owner_id = %s WHERE batch_id = %s", (owner_id, batch_id))
    if task_ids:
        cur.execute("UPDATE tasks SET owner_id = %s WHERE id = ANY(%s)", (owner_id, list(task_ids)))


def lock_owner(cur, owner_id) -> None:
    """Serialise one owner's quota check and insert (two uploads at once cannot both squeeze in)."""
    cur.execute("SELECT pg_advisory_xact_lock(7312, %s::int)", (owner_id % 2**31,))


def record_retry(cur, task_id, owner_id) -> None:
    """A retry of the owner's task, counted toward their day (reads.owner_load)."""
    cur.execute("INSERT INTO task_retries (task_id, owner_id) VALUES (%s, %s)", (task_id, owner_id))


# What a deleted or expired row loses (migration 008): what names or describes the photo. It keeps
# what the counts and the operator's record of what ran need: ids, owner, states and failure codes,
# times, attempts, sizes, worker. A deleted row keeps its paths and input key until its files are
# purged (a sweep finds them by these); an expired row's files go in the same breath.
SCRUB_DESCRIPTION = "filename = '', options = '{}', error = NULL, idem_key = NULL"
# The input's hash goes; whether there was one stays ('' is a file refused on arrival, which the
# day's quota counts differently: reads.owner_load).
SCRUB_FILES = "input_key = CASE WHEN input_key = '' THEN '' ELSE 'erased' END, output_path = ''"
# A render batch's source names the batch it drew from (an id, no photo): kept, like 'upload'.
SCRUB_BATCH = (
    "source = CASE WHEN source = 'upload' OR source LIKE 'render:%%' THEN source ELSE 'folder' END,"
    " options = '{}', error = NULL"
)


def expire_tasks(cur, task_ids: list) -> None:
    """Mark tasks expired, scrubbed (the caller removes their files from the rows it holds), and
    forget their results so that no new task reuses a removed file."""
    cur.execute(
        f"UPDATE tasks SET expired_at = now(), {SCRUB_DESCRIPTION}, {SCRUB_FILES} WHERE id = ANY(%s)",  # noqa: S608
        (list(task_ids),),
    )
    _forget_results(cur, task_ids)


def _forget_results(cur, task_ids: list) -> None:
    cur.execute("DELETE FROM results WHERE task_id = ANY(%s)", (list(task_ids),))


def expire_batches(cur, batch_ids: list) -> None:
    cur.execute(f"UPDATE batches SET expired_at = now(), {SCRUB_BATCH} WHERE id = ANY(%s)", (list(batch_ids),))  # noqa: S608


def delete_tasks(cur, task_ids: list) -> None:
    """Mark tasks deleted by their owner, and expired (their files go now: see deleting), scrubbed."""
    cur.execute(
        f"UPDATE tasks SET deleted_at = now(), expired_at = now(), {SCRUB_DESCRIPTION} WHERE id = ANY(%s)",  # noqa: S608
        (list(task_ids),),
    )
    _forget_results(cur, task_ids)


def mark_purged(cur, task_ids: list, batch_id=None) -> None:
    """The files of these deleted tasks (and batch) are gone: retention's sweep need not look again,
    and the paths that led to them (they carry the photos' names) go too."""
    cur.execute(f"UPDATE tasks SET purged_at = now(), {SCRUB_FILES} WHERE id = ANY(%s)", (list(task_ids),))  # noqa: S608
    if batch_id is not None:
        cur.execute("UPDATE batches SET purged_at = now() WHERE id = %s", (batch_id,))


def delete_batch(cur, batch_id) -> None:
    cur.execute(
        f"UPDATE batches SET deleted_at = now(), expired_at = coalesce(expired_at, now()), {SCRUB_BATCH}"  # noqa: S608
        " WHERE id = %s",
        (batch_id,),
    )
