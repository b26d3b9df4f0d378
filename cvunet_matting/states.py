"""The states a task and a batch move through, and why a task failed: named once for the worker, the
database, the API, the pages and the metrics.

The worker side writes them (db/, batch_lifecycle); everything that reads or publishes them imports
these enums, so a new state cannot be served by one part and missing from another. Each is a
StrEnum: a member is its own string in SQL parameters, JSON and comparisons with a row's column.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """A task: queued, running, waiting to retry, then one of the two final states."""

    PENDING = "pending"
    STARTED = "started"
    RETRY = "retry"
    SUCCESS = "success"
    FAILURE = "failure"


class BatchState(StrEnum):
    """A batch: its folder listed (folder batches only), its tasks run, its ZIP written, done."""

    LISTING = "listing"
    RUNNING = "running"
    FINALIZING = "finalizing"
    DONE = "done"


class ChunkState(StrEnum):
    """A batch's chunk (one chord of images): recorded, sent to the queue, every image ended."""

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    DONE = "done"


class FailureCode(StrEnum):
    """Why a task failed (its row's error_code): what an operator may requeue and what not."""

    REFUSED = "refused"  # the input itself (not an image, truncated, too many pixels): it would fail again
    CRASHED = "crashed"  # the worker process died on it CVUNET_MAX_ATTEMPTS times
    TIMEOUT = "timeout"  # over the soft time limit
    STORAGE = "storage"  # the shared storage stayed unreadable or unwritable past its retry budget
    INTERNAL = "internal"  # a bug: the details are in the worker's log
    CANCELLED = "cancelled"  # its owner or an operator cancelled it before it started
    NO_MATTE = "no_matte"  # a re-render with nothing to draw from: its source failed, or its files are gone
    EMPTY_SUBJECT = "empty_subject"  # a crop was asked for and the model found no subject to crop to


TASK_STATES = tuple(TaskState)
FINAL_TASK_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE})
BATCH_STATES = tuple(BatchState)
