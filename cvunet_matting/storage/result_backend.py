"""Celery's Redis result backend, less the read before an image's success is stored, and less the
publisher's subscription to each task's result (`on_task_call`).

Before it stores a state, Celery reads the one stored already and keeps a SUCCESS it finds (celery/
backends/base.py, BaseKeyValueStoreBackend._store_result: a lost worker's late result must not
overwrite the first). For an image the finish claim (pipeline/finish.py) has decided that already:
only the run that holds the claim stores a final state. So a SUCCESS stored by a run of this process
that holds its task's claim (`hold_claim`, until the task's postrun) skips that read: one Redis round
trip fewer per image. Every other store (another task, a failure, a retry) reads first, as Celery does.

celeryconfig.py names the class in `result_backend` ("module:Class+redis://..."), so every process
of the app (web, workers, the CLI) has it; only a worker's claims change what it stores.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str

# Task ids whose finish claim this process holds (a pool process runs one task at a time).
_claimed: set[str] = set()


def hold_claim(task_id: str) -> None:
    """This process holds `task_id`'s finish claim: its SUCCESS is stored without a read first."""
    _claimed.add(task_id)


def release_claim(task_id: str) -> None:
    _claimed.discard(task_id)


class ResultBackend(RedisBackend):
    def on_task_call(self, producer: Any, task_id: Any) -> dict:
        """No extra message properties (as the base backend), and no subscription. Celery's Redis
        backend subscribes a process that publishes a task outside a task (the web's submissions, the
        CLI) to the task's result channel, in case it waits, and unsubscribes when its AsyncResult goes:
        two round trips an image, and each result sent to it as well. Nothing here waits on a result
        through Celery (the pages read rows; waiting.py has its own subscriber); a caller of
        AsyncResult.get() subscribes then, and reads the state stored already."""
        return {}

    def _store_result(
        self, task_id: Any, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        if state != states.SUCCESS or bytes_to_str(task_id) not in _claimed:
            return super()._store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        # As Celery's own, less its read of the state stored already (see the module).
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result
