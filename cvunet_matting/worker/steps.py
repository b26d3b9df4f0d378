"""A worker's lifecycle as Celery bootsteps: what starts, in which order, and what stops after what.

celery_app.py registers them on the app by name, so every worker of the app has them (`celery -A
cvunet_matting worker`, the supervisor's command) and the web side, which imports the app to publish,
never loads this runtime. Read against celery/worker/components.py (the worker's steps: Hub, Pool,
Consumer last) and celery/worker/consumer/ (the consumer's: Connection ... Tasks ... Evloop last):

- DeviceHostStep, a worker step: an overlapped model worker's device process is serving before the
  Pool step forks the pool processes (they inherit its address and key) and is stopped only after
  the Pool step has waited for their images.
- LivenessStep, a consumer step: this worker's incarnation, the owner record of every message it
  receives, and the watchdog thread (heartbeat, sweep, reconcile), from the moment it consumes until
  the pool has finished what it held.
- EventBatchStep, a consumer step: the task events Flower shows, sent a few times a second in one
  message each instead of once or twice per task.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps, signals
from celery.exceptions import WorkerShutdown
from celery.worker import components

from cvunet_matting.config import get_settings
from cvunet_matting.recovery import liveness

from .device_host import EXIT_NO_DEVICE, DeviceHost, DeviceUnavailable
from .overlap import overlap_of
from .watchdog import Received, Watchdog, consumed_here, receiving_here

log = logging.getLogger(__name__)

# How long task events wait to be sent together: Flower hears of a task at most this late.
EVENT_FLUSH_S = 0.25


def ahead_of_pool(steps: list[Any], step: bootsteps.StartStopStep) -> None:
    """Move `step` just before the Pool step in the worker's list of started steps.

    The blueprint starts that list in order and stops it in reverse. `requires` cannot put a step
    before the Pool (it says what must start *before* a step, and the Pool requires only the Hub):
    otherwise the two are ordered by how a set of names happens to hash (it changes from one run to
    the next), so the place is set here, once every step is known to the list."""
    pool = next((i for i, s in enumerate(steps) if isinstance(s, components.Pool)), None)
    if pool is not None and steps.index(step) > pool:
        steps.remove(step)
        steps.insert(pool, step)


class DeviceHostStep(bootsteps.StartStopStep):
    """The device process of an overlapped model worker (one per GPU, holding the model).

    Started before the Pool step forks (ahead_of_pool): a device that cannot start stops the worker
    (EXIT_NO_DEVICE) before it has a pool process or takes any image. Stopped after the Pool step,
    which waits for the images in hand: they need the device until their last model run. A CPU worker
    (not overlapped) and the bookkeeping worker have none."""

    label = "Device host"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        super().__init__(w, **kwargs)
        self.host: DeviceHost | None = None

    def include_if(self, w: Any) -> bool:
        settings = get_settings()
        return settings.worker_role == "model" and overlap_of(settings).enabled

    def include(self, w: Any) -> bool:
        included = super().include(w)
        if included:
            ahead_of_pool(w.steps, self)
        return included

    def start(self, w: Any) -> None:
        host = DeviceHost()
        try:
            host.start()
        except DeviceUnavailable as exc:
            host.stop()
            log.critical("%s: this worker stops before it takes any image", exc)
            # WorkController.start stops the worker with this status (a SystemExit): the steps not
            # started yet, the pool among them, never start.
            raise WorkerShutdown(EXIT_NO_DEVICE) from None
        self.host = host

    def stop(self, w: Any) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None

    def terminate(self, w: Any) -> None:  # a cold shutdown: the pool's processes are gone already
        self.stop(w)


class LivenessStep(bootsteps.StartStopStep):
    """This worker's incarnation (a restarted worker is a new one), who owns each message it receives,
    and the watchdog thread that says it is alive (recovery/liveness.py, watchdog.py).

    Ownership is noted when a message arrives (task_received, every task, bookkeeping too) and
    recorded with the next beat: a node that dies at any point after taking a message has its message
    found (one whose owner was not recorded yet is taken once its grace, the heartbeat's TTL, has
    passed since its delivery, as soon as one whose owner's beat expired).
    The watchdog starts once the task consumer exists and runs until the worker has stopped, pool
    included (the consumer's shutdown, after every worker step has stopped): a beat that ended while
    a long image was still in hand would have another worker take that image for abandoned. A
    consumer restart (the broker reconnected) stops and starts the consumer's steps: the watchdog
    goes on through it, as the worker does."""

    label = "Liveness"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.incarnation = liveness.new_incarnation(c.hostname)
        self.watchdog: Watchdog | None = None
        self.received = Received()

    def create(self, c: Any) -> None:
        # Only this worker's consumer sends its received messages here (a test process may hold two).
        signals.task_received.connect(self.record_owner, sender=c, weak=False)

    def record_owner(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        """Recorded in Redis with the watchdog's next beat, in its round trip (liveness.beat), not in a
        round trip of its own in the consumer's thread, which receives, hands out and acknowledges
        every image. Unrecorded (Redis away), a message is still found once its grace has passed."""
        if request is not None:
            self.received.add(request.id)

    def start(self, c: Any) -> None:
        if self.watchdog is None:
            # The consumer's beat tells whether it has a reply it cannot read yet, and which queues the
            # work it holds belongs to (watchdog.py, recovery/backlog.py).
            self.watchdog = Watchdog(
                c.app,
                self.incarnation,
                get_settings(),
                receiving=lambda: receiving_here(c),
                queues=lambda: consumed_here(c),
                received=self.received,
            )
            self.watchdog.start()

    def stop(self, c: Any) -> None:
        """Nothing: a consumer restart must not end the beat (see the class)."""

    def shutdown(self, c: Any) -> None:
        signals.task_received.disconnect(self.record_owner, sender=c)
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None


class EventBatchStep(bootsteps.StartStopStep):
    """Task events (received, started, succeeded ..., what Flower shows) go out together, every
    EVENT_FLUSH_S, rather than as soon as the event loop comes round.

    Celery buffers a worker's task events and sends what the buffer holds at the loop's next turn:
    one PUBLISH (a round trip, in the one thread that also receives, hands out and acknowledges the
    images) for every one or two events, two or three times per image; a profile of an overlapped
    worker on small images found it the largest per-image cost of the worker's main process. Sent
    every 0.25 s, a busy worker's events for several images share one message (Celery's "task-multi",
    which Flower reads as the events it holds). Nothing else reads them: the task's row, its result
    and its acknowledgement do not wait for them. A worker killed outright loses the events of its
    last quarter second (Flower then shows those tasks as they were, until their redelivery's
    events); a warm shutdown or a consumer restart sends what is buffered first."""

    label = "Event batches"
    requires = ("celery.worker.consumer.events:Events",)

    def create(self, c: Any) -> None:
        if c.hub is None:  # no event loop (eventlet, gevent, solo): Celery sends each event at once
            return
        pending = False

        def flush() -> None:
            nonlocal pending
            pending = False
            c._flush_events()

        def buffered() -> None:
            """Celery's hook, called by the dispatcher each time it buffers an event."""
            nonlocal pending
            if not pending:
                pending = True
                c.hub.call_later(EVENT_FLUSH_S, flush)

        # An attribute of this consumer: the Events step hands it to each dispatcher it makes.
        c.on_send_event_buffered = buffered

    def stop(self, c: Any) -> None:
        self.send_buffered(c)

    def shutdown(self, c: Any) -> None:
        self.send_buffered(c)

    @staticmethod
    def send_buffered(c: Any) -> None:
        if c.event_dispatcher is not None:
            try:
                c.event_dispatcher.flush()
            except Exception as exc:  # the broker is away: the events are Flower's only
                log.warning("task events not sent: %s", exc)
