"""Users, passwords and API keys: who is asking, and what they may see.

Passwords are argon2id hashes (argon2-cffi). API keys are 256-bit random strings shown once; only
their SHA-256 is stored (a fast hash is right for a random key, and lets a request find its key by
one indexed lookup). An `Actor` is whoever a request acts for: a user, or the operator (the CLI,
the celery commands, legacy CVUNET_API_TOKENS, single-user mode), who owns NULL-owner work.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cvunet_matting import db
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow, TaskRow, UserRow
from cvunet_matting.errors import ErrorCode, InputError

HASHER = PasswordHasher()  # argon2id with the library's current recommended cost
KEY_PREFIX = "cvm_"
MIN_PASSWORD = 12
# New users get these quotas unless the admin says otherwise (admins get none).
DEFAULT_QUOTAS = {"max_in_flight": 2000, "max_per_day": 20000, "max_batch": 10000}


@functools.cache
def dummy_hash() -> str:
    """Verified against when the name is unknown (or has no password), so a wrong name costs the same
    work as a wrong password: made by HASHER, so with its very parameters. Made on first use, not at import."""
    return HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Actor:
    """Whoever a request acts for. `id` None is the operator (sees everything, owns NULL-owner work)."""

    id: int | None
    name: str
    is_admin: bool
    session_epoch: int = 0
    max_in_flight: int | None = None
    max_per_day: int | None = None
    max_batch: int | None = None

    # Flask-Login's user protocol: a session names the user and the epoch it was signed in under.
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_epoch}"

    def owns(self, row: TaskRow | BatchRow) -> bool:
        """Admins see everything; a user sees only rows they own."""
        return self.is_admin or (self.id is not None and row.get("owner_id") == self.id)

    @property
    def listing_owner(self) -> int | None:
        """Whose work a listing shows this actor: their own, or everyone's (None) for an admin."""
        return None if self.is_admin else self.id

    @classmethod
    def from_row(cls, row: UserRow) -> Actor:
        return cls(
            row["id"],
            row["name"],
            row["is_admin"],
            row["session_epoch"],
            row["max_in_flight"],
            row["max_per_day"],
            row["max_batch"],
        )


OPERATOR = Actor(None, "operator", True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    if not (1 <= len(name) <= 64) or not all(c.isascii() and (c.isalnum() or c in "._@-") for c in name):
        raise InputError("a user name is 1-64 characters: letters, digits and . _ @ -", code=ErrorCode.BAD_NAME)
    if not name[0].isalnum():
        raise InputError("a user name starts with a letter or a digit", code=ErrorCode.BAD_NAME)
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"a password has at least {MIN_PASSWORD} characters", code=ErrorCode.WEAK_PASSWORD)
    return password


def add_user(name: str, password: str | None, is_admin: bool = False, quotas: dict | None = None) -> dict:
    """Create a user (password None: API keys only); InputError when the name is taken or bad."""
    hashed = HASHER.hash(check_password(password)) if password is not None else None
    quotas = ({} if is_admin else DEFAULT_QUOTAS) if quotas is None else quotas
    with db.transaction() as cur:
        if reads.get_user_by_name(cur, check_name(name)):
            raise InputError(f"user {name!r} exists already", code=ErrorCode.EXISTS)
        return writes.create_user(cur, name, hashed, is_admin, quotas)


def find_user(name: str) -> UserRow:
    with db.transaction() as cur:
        row = reads.get_user_by_name(cur, name)
    if row is None:
        raise InputError(f"no user {name!r}", code=ErrorCode.NOT_FOUND)
    return row


def update_user(name: str, **fields) -> None:
    if "password" in fields:
        fields["password_hash"] = HASHER.hash(check_password(fields.pop("password")))
    with db.transaction() as cur:
        row = reads.get_user_by_name(cur, name)
        if row is None:
            raise InputError(f"no user {name!r}", code=ErrorCode.NOT_FOUND)
        writes.update_user(cur, row["id"], **fields)


def new_key(name: str, label: str = "", metrics_only: bool = False) -> tuple[str, dict]:
    """A new API key for the user: (the key, shown once; its row). `metrics_only`: it reads /metrics
    and nothing else, whoever its user is (Prometheus's scrape key)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, store_key(name, key, label, metrics_only)


def store_key(name: str, key: str, label: str = "", metrics_only: bool = False) -> dict:
    with db.transaction() as cur:
        row = reads.get_user_by_name(cur, name)
        if row is None:
            raise InputError(f"no user {name!r}", code=ErrorCode.NOT_FOUND)
        return writes.create_key(cur, row["id"], key[:12], hash_key(key), label, metrics_only)


def _key_row(key: str) -> UserRow | None:
    with db.transaction() as cur:
        row = reads.user_by_key_hash(cur, hash_key(key))
        if row is not None:
            writes.key_used(cur, row["key_id"])
    return row


def by_key(key: str) -> Actor | None:
    """The enabled user an unrevoked key belongs to, or None. A metrics-only key names nobody: it can
    never act as its user (the API, the pages, Flower's check), whatever the user may do."""
    row = _key_row(key)
    return Actor.from_row(row) if row and not row.get("key_metrics_only") else None


def key_reads_metrics(key: str) -> bool:
    """An unrevoked metrics-only key of an enabled user: it may read /metrics (and nothing else)."""
    row = _key_row(key)
    return bool(row and row.get("key_metrics_only"))


def by_session_id(session_id: str) -> Actor | None:
    """The user a signed session names, if enabled and signed in since their last sign-out."""
    user_id, _, epoch = session_id.partition(":")
    if not (user_id.isdigit() and epoch.isdigit()):
        return None
    with db.transaction() as cur:
        row = reads.get_user(cur, int(user_id))
    if row is None or row["disabled"] or row["session_epoch"] != int(epoch) or row["password_hash"] is None:
        return None
    return Actor.from_row(row)


def by_password(name: str, password: str) -> Actor | None:
    """The user whose password this is; the same work is done whether or not the name exists."""
    with db.transaction() as cur:
        row = reads.get_user_by_name(cur, name) if name else None
    stored = row["password_hash"] if row and row["password_hash"] else dummy_hash()
    try:
        HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row["password_hash"] is None or row["disabled"]:
        return None
    if HASHER.check_needs_rehash(stored):
        with db.transaction() as cur:
            writes.update_user(cur, row["id"], password_hash=HASHER.hash(password))
            row = reads.get_user(cur, row["id"]) or row  # the rehash moved the session epoch on
    return Actor.from_row(row)


def end_sessions(actor: Actor) -> None:
    """Every cookie signed for this user stops working (sign-out)."""
    if actor.id is not None:
        with db.transaction() as cur:
            writes.end_sessions(cur, actor.id)


def bootstrap_admin(name: str = "admin", deliver: Callable[[str, str], None] | None = None) -> tuple[str, str] | None:
    """On a database with no users, create one admin and return (name, password) to print once.
    `deliver(name, password)` hands them over before the admin is committed: if it raises, no admin is
    made (a password nobody received would lock the first admin out)."""
    with db.transaction() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(7313)")  # two hosts starting at once make one admin
        if reads.count_users(cur):
            return None
        password = secrets.token_urlsafe(18)
        writes.create_user(cur, name, HASHER.hash(password), True, {})
        if deliver:
            deliver(name, password)
    return name, password
