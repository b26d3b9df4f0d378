"""Signal handlers of a worker's main process: its incarnation, task ownership and the watchdog.

The pool child runs the model; the main process receives messages, acknowledges them and keeps the
heartbeat. Ownership is recorded when a message arrives, before any work starts, so a node that dies
at any point after taking a message has its message found by the watchdog (see liveness.py).
"""

from __future__ import annotations

import logging

from celery import signals

from cvunet_matting.config import get_settings
from cvunet_matting.recovery import liveness
from cvunet_matting.storage.redis_client import get_redis

from .watchdog import Watchdog, receiving_here

log = logging.getLogger(__name__)
_state: dict = {}


@signals.worker_init.connect
def on_worker_init(sender=None, **_):
    _state["incarnation"] = liveness.new_incarnation(getattr(sender, "hostname", None))


@signals.task_received.connect
def on_received(request=None, **_):
    # Every task, bookkeeping too: an unowned delivery is returned to the queue once its grace has
    # passed, and a folder listing or a ZIP can take minutes.
    if request is None or "incarnation" not in _state:
        return
    try:
        liveness.record_owner(get_redis(), request.id, _state["incarnation"])
    except Exception as exc:  # unrecorded, the message is still found once its grace has passed
        log.warning("could not record the owner of %s: %s", request.id, exc)


@signals.worker_ready.connect
def on_worker_ready(sender=None, **_):
    if "incarnation" not in _state:
        return
    # The sender is the worker's consumer: its beat tells whether it has a reply it cannot read yet.
    watchdog = Watchdog(sender.app, _state["incarnation"], get_settings(), receiving=lambda: receiving_here(sender))
    watchdog.start()
    _state["watchdog"] = watchdog


@signals.worker_shutdown.connect
def on_worker_shutdown(**_):
    watchdog = _state.pop("watchdog", None)
    if watchdog is not None:
        watchdog.stop()
