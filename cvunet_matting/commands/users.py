"""`cvunet-matting user ...`: accounts, API keys and quotas, for the operator on the server.

Secrets never come from argv (other users see it in `ps`): passwords are generated and printed
once, or read from stdin; API keys are generated and printed once.
"""

from __future__ import annotations

import os
import sys

import click

from cvunet_matting import db
from cvunet_matting.accounts import signin_limits
from cvunet_matting.accounts import users as accounts
from cvunet_matting.db import reads, writes
from cvunet_matting.errors import MattingError

from .console import fail


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated): read from stdin's first line, or a new random one."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    import secrets

    return secrets.token_urlsafe(18), True


def _limit(value: str | None) -> int | None | bool:
    """A quota from the command line: a whole number, or `none` for no limit; False: not given."""
    if value is None:
        return False
    if value.lower() == "none":
        return None
    if not value.isdigit():
        raise click.BadParameter(f"{value!r}: a whole number or 'none'")
    return int(value)


@click.group()
def user() -> None:
    """Accounts, API keys and quotas."""


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see everyone's work, the folder API, /metrics and Flower.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
@click.option("--no-password", is_flag=True, help="No browser sign-in: API keys only.")
def user_add(name: str, admin: bool, password_stdin: bool, no_password: bool) -> None:
    """Create a user; a generated password is printed once."""
    password, generated = (None, False) if no_password else _password(password_stdin)
    try:
        accounts.add_user(name, password, is_admin=admin)
    except MattingError as exc:
        fail(exc.reason)
    click.echo(f"created {'admin' if admin else 'user'} {name!r}")
    if generated:
        click.echo(f"password: {password}  (shown once)")


@user.command("list")
def user_list() -> None:
    """Every user: role, state, quotas and active keys."""
    with db.transaction() as cur:
        rows = reads.list_users(cur)
    click.echo(f"{'name':<24} {'role':<6} {'state':<9} {'in flight':>9} {'per day':>8} {'batch':>7} {'keys':>4}")
    for r in rows:
        limits = [str(r[k]) if r[k] is not None else "-" for k in ("max_in_flight", "max_per_day", "max_batch")]
        role, state = ("admin" if r["is_admin"] else "user"), ("disabled" if r["disabled"] else "active")
        click.echo(f"{r['name']:<24} {role:<6} {state:<9} {limits[0]:>9} {limits[1]:>8} {limits[2]:>7} {r['keys']:>4}")


def _update(name: str, **fields) -> None:
    try:
        accounts.update_user(name, **fields)
    except MattingError as exc:
        fail(exc.reason)


@user.command("disable")
@click.argument("name")
def user_disable(name: str) -> None:
    """No more sign-in or API calls; signed-in sessions end at once. Their work stays."""
    _update(name, disabled=True)
    click.echo(f"disabled {name!r}")


@user.command("purge")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask first.")
def user_purge(name: str, yes: bool) -> None:
    """Delete all of a user's finished work now (an erasure request, a user who leaves): the files go,
    as with the pages' Delete; the account stays (`disable` it too). Unfinished work is left: cancel it
    (`cvunet-matting cancel`) or wait for it, then run this again."""
    from cvunet_matting.cleanup.deleting import delete_all_of
    from cvunet_matting.config import get_settings
    from cvunet_matting.storage.files import Storage

    with db.transaction() as cur:
        row = reads.get_user_by_name(cur, name)
    if row is None:
        fail(f"no user {name!r}")
    if not yes:
        click.confirm(f"Delete every finished image and batch of {name!r}, files included, for good?", abort=True)
    done = delete_all_of(Storage(get_settings().data_dir), row["id"])
    went = f"{done['batches']} batch(es) and {done['images']} image(s)"
    click.echo(f"deleted {went} of {name!r}; removed {done['files']} file(s)")
    if done["unfinished"]:  # not all done: a script must not take it for finished
        fail(f"{done['unfinished']} image(s) not finished were left: cancel them or wait, then run this again")


@user.command("enable")
@click.argument("name")
def user_enable(name: str) -> None:
    """Sign-in and API calls work again; wrong passwords counted against the name are forgotten."""
    _update(name, disabled=False)
    signin_limits.clear(name)
    click.echo(f"enabled {name!r}")


@user.command("unlock")
@click.argument("name")
def user_unlock(name: str) -> None:
    """Let a name sign in again at once after too many wrong passwords (the delay shrinks by itself: it is
    15 minutes at most, and every count is forgotten a day after the last wrong password)."""
    try:
        accounts.find_user(name)
    except MattingError as exc:
        fail(exc.reason)
    click.echo(f"unlocked {name!r}" if signin_limits.clear(name) else f"{name!r} was not locked")


@user.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
def user_password(name: str, password_stdin: bool) -> None:
    """Set a new password (generated unless read from stdin); every session of the user ends."""
    password, generated = _password(password_stdin)
    _update(name, password=password)
    signin_limits.clear(name)  # whoever was guessing, the old password is gone
    signin_limits.forget_addresses(name)  # and the places that knew it are not trusted for the new one
    click.echo(f"new password for {name!r}: {password}  (shown once)" if generated else f"password of {name!r} set")


@user.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(["admin", "user"]))
def user_role(name: str, role: str) -> None:
    _update(name, is_admin=role == "admin")
    click.echo(f"{name!r} is now {role}")


@user.command("quota")
@click.argument("name")
@click.option("--in-flight", help="Images waiting or running at once (a number or 'none').")
@click.option("--per-day", help="Images submitted per UTC day (a number or 'none').")
@click.option("--max-batch", help="Images in one batch (a number or 'none').")
def user_quota(name: str, in_flight, per_day, max_batch) -> None:
    """Set a user's quotas; over one, submissions get 429 with Retry-After."""
    given = {"max_in_flight": _limit(in_flight), "max_per_day": _limit(per_day), "max_batch": _limit(max_batch)}
    changed = {k: v for k, v in given.items() if v is not False}
    if not changed:
        fail("say which quota: --in-flight, --per-day and/or --max-batch (a number, or 'none')")
    _update(name, **changed)
    click.echo(f"quotas of {name!r} updated")


@user.group("key")
def key() -> None:
    """API keys: `Authorization: Bearer KEY` on /api/v1."""


@key.command("add")
@click.argument("name")
@click.option("--label", default="", help="What the key is for.")
@click.option(
    "--metrics-only",
    is_flag=True,
    help="The key reads /metrics and nothing else (Prometheus's scrape key); its user needs no admin role.",
)
def key_add(name: str, label: str, metrics_only: bool) -> None:
    """Make a key for the user; it is printed once and only its hash is kept."""
    try:
        secret, row = accounts.new_key(name, label, metrics_only=metrics_only)
    except MattingError as exc:
        fail(exc.reason)
    kind = "metrics-only key" if metrics_only else "key"
    click.echo(f"{kind} {row['id']} for {name!r} (shown once): {secret}")


@key.command("list")
@click.argument("name")
def key_list(name: str) -> None:
    try:
        owner = accounts.find_user(name)
    except MattingError as exc:
        fail(exc.reason)
    with db.transaction() as cur:
        rows = reads.list_keys(cur, owner["id"])
    for r in rows:
        state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "active"
        used = f"{r['last_used_at']:%Y-%m-%d %H:%M}" if r["last_used_at"] else "never"
        scope = "metrics" if r["metrics_only"] else "full"
        click.echo(f"{r['id']:>5}  {r['prefix']}...  {state:<18} {scope:<7} used {used:<16} {r['label']}")


@key.command("revoke")
@click.argument("name")
@click.argument("key_id", type=int)
def key_revoke(name: str, key_id: int) -> None:
    try:
        owner = accounts.find_user(name)
    except MattingError as exc:
        fail(exc.reason)
    with db.transaction() as cur:
        done = writes.revoke_key(cur, owner["id"], key_id)
    if not done:
        fail(f"{name!r} has no active key {key_id}")
    click.echo(f"revoked key {key_id} of {name!r}")


@key.command("import")
@click.argument("name")
def key_import(name: str) -> None:
    """Store each token of CVUNET_API_TOKENS as a key of NAME (then unset the variable)."""
    tokens = [t.strip() for t in os.environ.get("CVUNET_API_TOKENS", "").split(",") if t.strip()]
    if not tokens:
        fail("CVUNET_API_TOKENS is empty: nothing to import")
    if any(len(t) < 32 for t in tokens):
        fail("a token under 32 characters is too weak to keep: issue new keys with `user key add` instead")
    try:
        for token in tokens:
            accounts.store_key(name, token, label="imported from CVUNET_API_TOKENS")
    except MattingError as exc:
        fail(exc.reason)
    click.echo(f"imported {len(tokens)} token(s) as keys of {name!r}; now remove CVUNET_API_TOKENS")
