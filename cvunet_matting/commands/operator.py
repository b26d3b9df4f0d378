"""`celery -A cvunet_matting requeue|reconcile|expire|cancel`: operator commands registered through
`celery.commands`.

The same click commands are also `cvunet-matting requeue|reconcile|expire|cancel`.
"""

from __future__ import annotations

import re
import uuid

import click
import psycopg2

from cvunet_matting.db.rows import TaskRow
from cvunet_matting.errors import ErrorCode, InputError, one_line

from .console import fail

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '15m', '2h', '1d' or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "")
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h or 1d")
    return int(match.group(1)) * UNITS[match.group(2) or "s"]


def describe(row: TaskRow) -> str:
    batch = f" batch={row['batch_id']}" if row["batch_id"] else ""
    kind = f" ({row['error_code']})" if row.get("error_code") else ""
    error = f" error={row['error']!r}" if row["error"] else ""
    return f"{row['id']} {row['state']:<8} attempts={row['attempts']} {row['filename']}{batch}{kind}{error}"


def batch_option(ctx, param, value: str | None) -> str | None:
    """A batch id as the pages and the API show it, checked here rather than by PostgreSQL."""
    return _id_option(value, "batch")


def task_option(ctx, param, value: str | None) -> str | None:
    return _id_option(value, "task")


def _id_option(value: str | None, kind: str) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a {kind} id (a UUID such as the {kind} page's URL shows)") from None


@click.command("requeue")
@click.option("--failed", is_flag=True, help="Requeue tasks that ended as failed.")
@click.option("--stuck-for", default=None, help="Requeue tasks unfinished for longer than this (e.g. 15m).")
@click.option("--batch", "batch_id", default=None, callback=batch_option, help="Only tasks of this batch id.")
@click.option(
    "--include-refused", is_flag=True, help="Also inputs refused for what they are (truncated, not an image...)."
)
@click.option("--dry-run", is_flag=True, help="List what would be requeued; change nothing.")
def requeue(failed, stuck_for, batch_id, include_refused, dry_run):
    """Requeue failed or stuck matting tasks recorded in PostgreSQL."""
    from cvunet_matting.recovery.requeue import requeue as do_requeue

    if not failed and stuck_for is None:
        fail("say what to requeue: --failed and/or --stuck-for DURATION")
    stuck = parse_duration(stuck_for) if stuck_for is not None else None
    try:
        rows = do_requeue(failed, stuck, batch_id, dry_run, include_refused)
    except psycopg2.Error as exc:
        fail(f"postgres: {one_line(exc)}")
    for row in rows:
        click.echo(describe(row))
    click.echo(f"{len(rows)} task(s) {'would be ' if dry_run else ''}requeued")
    if failed and not include_refused:
        refused = count_refused(batch_id)
        if refused:  # left out on purpose, but an operator looking for "what failed" should know
            click.echo(f"{refused} refused input(s) left failed: they would fail the same way (--include-refused)")


@click.command("cancel")
@click.option("--batch", "batch_id", default=None, callback=batch_option, help="This batch's images not yet started.")
@click.option("--task", "task_id", default=None, callback=task_option, help="This task, if not yet started.")
def cancel(batch_id, task_id):
    """Cancel matting work no worker has started: each image ends at once as failed (code cancelled),
    and a message of it already queued is dropped unrun; what runs finishes. `--batch` also stops a folder's
    listing. A retry (the pages, the API) runs a cancelled image after all."""
    from cvunet_matting.accounts.users import OPERATOR
    from cvunet_matting.services import actions

    if (batch_id is None) == (task_id is None):
        fail("say what to cancel: --batch ID or --task ID")
    try:
        if batch_id:
            count = actions.cancel_batch(OPERATOR, batch_id)["cancelled"]
        else:
            count = actions.cancel_task(OPERATOR, task_id)["cancelled"]
    except InputError as exc:
        if exc.code != ErrorCode.NOT_PENDING:
            fail(exc.reason)
        count = 0
    except psycopg2.Error as exc:
        fail(f"postgres: {one_line(exc)}")
    click.echo(f"{count} task(s) cancelled" + ("" if count else ": none was waiting (what runs finishes)"))


def count_refused(batch_id: str | None) -> int:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return reads.count_refused(cur, batch_id)


@click.command("reconcile")
@click.option("--dry-run", is_flag=True, help="List what would be re-enqueued; change nothing.")
@click.option(
    "--wait",
    "wait_for",
    default="10m",
    show_default=True,
    help="How long to wait for tasks workers still run but Redis forgot (their batches resume after).",
)
def reconcile(dry_run, wait_for):
    """Re-enqueue tasks PostgreSQL knows as unfinished but Redis lost (e.g. after a Redis restart)."""
    from cvunet_matting.recovery.requeue import reconcile as do_reconcile

    try:
        found = do_reconcile(dry_run, parse_duration(wait_for), notify=click.echo)
    except psycopg2.Error as exc:
        fail(f"postgres: {one_line(exc)}")
    for row in found["lost"]:
        click.echo(describe(row))
    verb = "would be " if dry_run else ""
    click.echo(
        f"{len(found['lost'])} lost task(s) {verb}re-enqueued, "
        f"{len(found['stalled_batches'])} stalled batch(es) {verb}restarted, "
        f"{len(found['storage_requeued'])} storage failure(s) requeued"
    )


@click.command("expire")
@click.option("--dry-run", is_flag=True, help="Count what is past retention; remove nothing.")
def expire(dry_run):
    """Remove inputs, results and archives older than CVUNET_RETENTION_DAYS (the rows stay, expired)."""
    from cvunet_matting.cleanup.retention import expire as do_expire
    from cvunet_matting.cleanup.retention import measure
    from cvunet_matting.config import get_settings

    settings = get_settings()
    if settings.retention_days <= 0:
        click.echo("retention is off (CVUNET_RETENTION_DAYS=0): nothing expires")
        return
    try:
        done = do_expire(settings, dry_run)
        if not dry_run:
            measure(settings)  # now, not in expire's background thread, which this command would not wait for
    except psycopg2.Error as exc:
        fail(f"postgres: {one_line(exc)}")
    verb, removed = ("would expire", "would remove") if dry_run else ("expired", "removed")
    click.echo(
        f"{verb} {done['tasks']} task(s) and {done['batches']} batch(es) finished over "
        f"{settings.retention_days} days ago; {removed} {done['files']} file(s) and {done['inputs']} input(s)"
    )
