"""The watchdog thread every worker's main process runs: its heartbeat, and (in one worker at a time)
the sweep that returns a dead worker's messages and the periodic reconcile.

It lives in the worker's main process, not the pool child: the child may spend minutes in the model
while the main process stays free, so a slow task never stops the heartbeat. Every worker runs one;
a leader key elects the one that sweeps, and another takes over within seconds if it dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import suppress

from celery.worker import state as worker_state

from cvunet_matting.config import Settings
from cvunet_matting.recovery import liveness, transport
from cvunet_matting.storage.redis_client import get_redis

log = logging.getLogger(__name__)
EXPIRY_INTERVAL_S = 3600.0
EXPIRY_DELAY_S = 60.0  # not in a freshly started cluster's first minute


def held_here() -> set[str]:
    """Task ids this worker process has received and not yet finished."""
    for _ in range(3):  # the sets are changed by the consumer thread while we read them
        try:
            return {r.id for r in list(worker_state.reserved_requests) + list(worker_state.active_requests)}
        except RuntimeError:
            continue
    return set()


def receiving_here(consumer) -> bool:
    """Whether this worker's task consumer has a reply from Redis it cannot read yet: a message in it
    is off the queue and not in `unacked` (see transport.reply_unread)."""
    task_consumer = getattr(consumer, "task_consumer", None)  # None while the consumer reconnects
    try:
        return task_consumer is not None and transport.reply_unread(task_consumer.channel)
    except Exception:  # a channel being replaced: the next beat tells
        return False


def consumed_here(consumer) -> list[str]:
    """The queues this worker's task consumer takes messages from (none while it reconnects, or after
    a preStop hook's cancel_consumer)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    try:
        return [queue.name for queue in task_consumer.queues] if task_consumer is not None else []
    except Exception:  # a consumer being replaced: the next beat tells
        return []


class Received:
    """Ids of the messages this worker's consumer received since its last beat, whose owner record
    goes out with the next beat (liveness.beat). The consumer's thread adds, the watchdog's takes."""

    def __init__(self) -> None:
        self._ids: deque[str] = deque()  # append and popleft are atomic: no lock between the two threads

    def add(self, task_id: str) -> None:
        self._ids.append(task_id)

    def take(self) -> list[str]:
        taken = []
        with suppress(IndexError):
            while True:
                taken.append(self._ids.popleft())
        return taken

    def put_back(self, task_ids: list[str]) -> None:
        self._ids.extend(task_ids)


class Watchdog(threading.Thread):
    def __init__(
        self,
        app,
        incarnation: str,
        settings: Settings,
        held=held_here,
        receiving=lambda: False,
        queues=lambda: [],
        received: Received | None = None,
    ):
        super().__init__(name="cvunet-watchdog", daemon=True)
        self.app, self.incarnation, self.settings, self.held = app, incarnation, settings, held
        self.receiving, self.queues = receiving, queues
        self.received = received if received is not None else Received()
        self.stopped = threading.Event()
        self.next_reconcile = 0.0
        self.next_expiry = time.monotonic() + EXPIRY_DELAY_S
        self.expiring: threading.Thread | None = None
        self.reconciling: threading.Thread | None = None

    def run(self) -> None:
        while True:  # the first beat at once: a worker is not alive until it says so
            try:
                self.tick()
            except Exception as exc:  # Redis or PostgreSQL away: try again on the next tick
                log.warning("watchdog: %s", exc)
            if self.stopped.wait(self.settings.heartbeat_interval):
                return

    def tick(self) -> None:
        client = get_redis()
        self.beat(client)
        if not liveness.lead(client, self.incarnation, ttl=self.settings.heartbeat_ttl):
            return
        self.sweep(client)
        if time.monotonic() >= self.next_reconcile:
            self.next_reconcile = time.monotonic() + self.settings.reconcile_interval
            self.reconcile()
        if time.monotonic() >= self.next_expiry:
            self.next_expiry = time.monotonic() + EXPIRY_INTERVAL_S
            self.expire()

    def beat(self, client) -> None:
        receiving, queues = self.receiving(), self.queues()
        received = self.received.take()
        try:
            liveness.beat(
                client,
                self.incarnation,
                self.held(),
                self.settings.heartbeat_ttl,
                receiving=receiving,
                queues=queues,
                received=received,
            )
        except Exception:
            self.received.put_back(received)  # recorded with the next beat that gets through
            raise

    def sweep(self, client) -> None:
        lost = liveness.find_abandoned(client, grace=self.settings.heartbeat_ttl)
        if lost:
            transport.restore(self.app, [d.tag for d in lost])
            log.warning("returned %d task(s) held by dead workers: %s", len(lost), [d.task_id for d in lost])

    def reconcile(self) -> None:
        """In a thread of its own, one at a time: its second look waits for a fresh beat from every
        worker, this one's among them, and a beat or a lead that lapsed meanwhile would have another
        watchdog take this live worker for dead (and run what it holds twice)."""
        if self.reconciling is None or not self.reconciling.is_alive():
            self.reconciling = threading.Thread(target=self._reconcile, name="cvunet-reconcile", daemon=True)
            self.reconciling.start()

    def _reconcile(self) -> None:
        from cvunet_matting.recovery.requeue import reconcile  # the orchestration side, loaded only in the leader

        try:
            found = reconcile(settle_s=self.settings.heartbeat_ttl, notify=log.info)
        except Exception as exc:  # Redis or PostgreSQL away: the next round tries again
            log.warning("reconcile: %s", exc)
            return
        if found["lost"] or found["stalled_batches"] or found["storage_requeued"]:
            counts = (len(found["lost"]), len(found["stalled_batches"]), len(found["storage_requeued"]))
            log.warning("reconcile: %d lost task(s), %d stalled batch(es), %d storage failure(s) requeued", *counts)

    def expire(self) -> None:
        """Retention, in a thread of its own: a first sweep of a long history can take longer than the
        heartbeat's TTL, and this thread's beat must go on meanwhile."""
        if self.expiring is None or not self.expiring.is_alive():
            self.expiring = threading.Thread(target=self._hourly, name="cvunet-retention", daemon=True)
            self.expiring.start()

    def _hourly(self) -> None:
        self._expire()
        self._sweep_orphans()

    def _expire(self) -> None:
        from cvunet_matting.cleanup.deleting import purge_leftovers
        from cvunet_matting.cleanup.retention import expire
        from cvunet_matting.storage.files import Storage

        try:
            done = expire(self.settings)
            purged = purge_leftovers(Storage(self.settings.data_dir))
        except Exception as exc:  # PostgreSQL or storage away: the next hour tries again
            log.warning("retention: %s", exc)
            return
        if any(done.values()):
            log.info(
                "retention: expired %(tasks)d task(s), %(batches)d batch(es), removed %(files)d file(s) "
                "and %(inputs)d input(s)",
                done,
            )
        if any(purged.values()):  # a web process died while it removed what its owner deleted
            log.warning(
                "deleted work left on disk: removed %(files)d file(s) of %(tasks)d task(s) and %(batches)d batch(es)",
                purged,
            )

    def _sweep_orphans(self) -> None:
        """Input files no task reads, and result folders no task row names (a render cut short), in
        the same hourly round (cleanup/orphan_inputs.py, cleanup/orphan_outputs.py)."""
        from cvunet_matting.cleanup import orphan_inputs, orphan_outputs
        from cvunet_matting.storage.files import Storage

        storage = Storage(self.settings.data_dir)
        try:
            swept = orphan_inputs.sweep(storage, self.settings.orphan_input_hours * 3600)
            orphan_outputs.sweep(storage)  # says itself what it removed
        except Exception as exc:  # PostgreSQL or storage away: the next hour tries again
            log.warning("orphan files: %s", exc)
            return
        if any(swept.values()):
            log.warning("removed %(inputs)d input file(s) no task reads and %(partial)d partial one(s)", swept)

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            # A beat in flight would otherwise land after the removal below, and outlive the worker.
            self.join(self.settings.heartbeat_ttl)
        try:
            liveness.forget(get_redis(), self.incarnation)  # a clean stop is not a death
        except Exception as exc:
            log.warning("watchdog: could not remove the heartbeat: %s", exc)
