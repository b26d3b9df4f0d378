"""The task events Flower shows still come from a real worker, sent together (worker/steps.py
EventBatchStep): each image's received, started and succeeded, in order, in fewer messages than
events."""

from __future__ import annotations

import threading
import time

import pytest

from cvunet_matting.celery_app import app
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item, submit_batch
from tests import support
from tests.support import png_bytes

IMAGES = 6


class EventListener:
    """What Flower does: an event receiver on the broker, here counting events and messages."""

    def __init__(self):
        self.events: list[dict] = []
        self.messages = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": self.events.append})
            count = receiver._receive

            def counting(body, message):
                self.messages += 1
                return count(body, message)

            receiver._receive = counting
            self.receiver = receiver
            self.ready.set()
            receiver.capture(limit=None, timeout=None, wakeup=False)  # until should_stop

    def task_events(self, task_ids: set[str]) -> list[dict]:
        return [e for e in self.events if e.get("uuid") in task_ids]


@pytest.mark.services
def test_flower_still_hears_every_tasks_events_now_sent_together(clean_state, worker_factory):
    listener = EventListener()
    listener.thread.start()
    assert listener.ready.wait(10)
    worker_factory()
    batch_id = submit_batch([Item(f"e{i}.png", png_bytes(32 + i)) for i in range(IMAGES)], OutputOptions())
    support.wait_batch(batch_id, timeout=120)
    ids = {str(row["id"]) for row in support.rows_of(batch_id)}
    wanted = ("task-received", "task-started", "task-succeeded")
    support.wait_until(
        lambda: (
            {e["type"] for e in listener.task_events(ids)} >= set(wanted)
            and sum(e["type"] == "task-succeeded" for e in listener.task_events(ids)) == IMAGES
        ),
        10,
        message="the images' events did not all arrive",
    )
    time.sleep(1)  # anything still on its way
    listener.receiver.should_stop = True
    listener.thread.join(5)
    events = listener.task_events(ids)
    for task_id in ids:
        kinds = [e["type"] for e in events if e["uuid"] == task_id]
        assert [k for k in kinds if k in wanted] == list(wanted), (task_id, kinds)
    worker_events = [e for e in listener.events if e["type"].startswith("task-") and e["type"] != "task-sent"]
    # Sent as they came (the loop's next turn), the images' events took about a message each; sent
    # together, far fewer. (The sender's task-sent events are not the worker's: left out.)
    assert listener.messages < len(worker_events), (listener.messages, len(worker_events))
