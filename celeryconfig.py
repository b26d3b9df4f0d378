"""Celery settings, derived from cvunet_matting's environment configuration (see config.py)."""

from kombu import Exchange, Queue

from cvunet_matting.config import get_settings
from cvunet_matting.pipeline.dispatch import BOOKKEEPING_TASKS

_settings = get_settings()

broker_url = _settings.redis_url
# Celery's Redis backend, less a read before an image's success is stored (its finish claim decides
# which run stores it): storage/result_backend.py.
result_backend = "cvunet_matting.storage.result_backend:ResultBackend+" + _settings.redis_url
broker_connection_retry_on_startup = True

# Redis redelivers a task not acknowledged within the visibility timeout; it must outlast the longest
# task, and Redis reads it in three places: the broker, the result backend and the global setting.
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout,
    # Sweep for abandoned (unacked, expired) messages every 10 s; kombu's default is every 100 s.
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
    # A publish to a vanished Redis must fail, not hang the web request forever.
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}
# A result write that meets a restarting Redis is retried until it answers: the image's file and its
# PostgreSQL row are already durable, so giving up would turn a success into a failure.
result_backend_always_retry = True
result_backend_max_sleep_between_retries_ms = 2000
result_backend_max_retries = 300
visibility_timeout = _settings.visibility_timeout

# Acknowledge after the work is done, so a crashed worker's task is redelivered, never lost.
task_acks_late = True
task_reject_on_worker_lost = True
# A hard time limit kills the child: requeue it like a crash (counted, failed after max attempts).
task_acks_on_timeout = False
task_acks_on_failure = True
worker_prefetch_multiplier = 1
# Replace a pool process after CVUNET_MAX_TASKS_PER_CHILD tasks (after the task in hand, never during):
# what its C heap gained over a thousand images is given back; the model loads again in ~1 s.
worker_max_tasks_per_child = _settings.max_tasks_per_child or None
task_soft_time_limit = _settings.task_soft_limit
task_time_limit = _settings.task_hard_limit

# Images go to the model workers' queue; the batches' bookkeeping (chunk callbacks, finalize with its
# ZIP, folder listing) to a light CPU worker's, so a GPU worker never stops matting to build archives.
# Each queue has its own exchange and routing key: a Queue declared with neither is bound to the
# default exchange under the default key, and would receive a copy of every image message.
task_default_queue = _settings.queue
task_default_exchange = _settings.queue
task_default_routing_key = _settings.queue
task_queues = (
    Queue(_settings.queue, Exchange(_settings.queue, type="direct"), routing_key=_settings.queue),
    Queue(
        _settings.bookkeeping_queue,
        Exchange(_settings.bookkeeping_queue, type="direct"),
        routing_key=_settings.bookkeeping_queue,
    ),
)
task_routes = {name: {"queue": _settings.bookkeeping_queue} for name in BOOKKEEPING_TASKS}
task_track_started = True
task_send_sent_event = True
worker_send_task_events = True
result_extended = True
result_expires = 7 * 24 * 3600
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
# Loading the model may take longer than Celery's default 4 s process-start window.
worker_proc_alive_timeout = 60
include = ["cvunet_matting.tasks"]
