"""The rows the database hands the other layers, typed: what a query of `reads` returns, column by
column, as the migrations (db/migrations) define them. psycopg2 returns plain dicts; these TypedDicts
say which keys they hold, so a misspelt column is an error the type checker finds."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict
from uuid import UUID


class TaskRow(TypedDict):
    """One image's record (tasks): its input, its options, where its result goes, and how it went.
    `state` is a states.TaskState value, `error_code` a states.FailureCode value."""

    id: UUID
    batch_id: UUID | None
    chunk: int | None
    position: int
    filename: str
    input_key: str  # '' for a file refused on arrival: nothing was stored
    options: dict[str, Any]
    output_path: str
    state: str
    attempts: int
    worker: str | None
    error: str | None
    error_code: str | None
    idem_key: str | None
    reused: bool
    width: int | None
    height: int | None
    timings: dict[str, float] | None
    confidence: float | None  # image/confidence.py; None before migration 011 and for failures
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    event_at: datetime
    requeues: int
    owner_id: int | None
    expired_at: datetime | None
    deleted_at: datetime | None
    purged_at: datetime | None
    rendered_from: UUID | None  # the task a re-render drew it from (migration 012); None: the model made it
    model_version: str | None  # the model that made its raw matte (migration 012); None before, and for failures
    owner_name: NotRequired[str | None]  # listings only


class BatchRow(TypedDict):
    """A batch's record (batches); `state` is a states.BatchState value."""

    id: UUID
    state: str
    source: str  # 'upload' or the server-side folder
    total: int
    options: dict[str, Any]
    output_dir: str
    zip_path: str | None
    manifest_path: str | None
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    owner_id: int | None
    finalizing_since: datetime | None
    expired_at: datetime | None
    deleted_at: datetime | None
    purged_at: datetime | None
    owner_name: NotRequired[str | None]  # listings only


class BatchCounts(TypedDict):
    """A batch's images by outcome: succeeded, failed, and the rest (waiting, running, retrying)."""

    success: int
    failure: int
    pending: int


class ResultRow(TypedDict):
    """A stored result, found by its idempotency key (the same input and options give the same file)."""

    idem_key: str
    output_path: str
    task_id: UUID
    width: int | None
    height: int | None
    confidence: float | None
    created_at: datetime


class UserRow(TypedDict):
    id: int
    name: str
    password_hash: str | None  # None: API keys only, no browser sign-in
    is_admin: bool
    disabled: bool
    session_epoch: int
    max_in_flight: int | None
    max_per_day: int | None
    max_batch: int | None
    created_at: datetime
    key_id: NotRequired[int]  # found by an API key: that key's id
    key_metrics_only: NotRequired[bool]  # found by an API key: it may read /metrics and nothing else
    keys: NotRequired[int]  # the user listing: how many unrevoked keys


class KeyRow(TypedDict):
    id: int
    user_id: int
    prefix: str
    key_hash: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    metrics_only: bool  # reads /metrics and nothing else (Prometheus)
