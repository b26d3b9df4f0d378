"""The device process's batcher, driven through real pipes by stand-in pool processes."""

from __future__ import annotations

import contextlib
import threading
import time
from multiprocessing import Pipe

import numpy as np

from cvunet_matting.worker.device_protocol import Reply
from cvunet_matting.worker.device_server import DeviceServer, Job


class RecordingSession:
    """A batched model stand-in: records when each run starts and which images it held; an image
    whose first value is 255 makes the whole run fail (as a bad input in a batch would)."""

    batched = True

    def __init__(self):
        self.runs: list[tuple[float, list[int]]] = []

    def infer_batch(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        self.runs.append((time.monotonic(), [int(t[0]) for t in tensors]))
        if any(t[0] == 255 for t in tensors):
            raise ValueError("bad input")
        return [t * 2 for t in tensors]


def submit(server: DeviceServer, value: int, alone: bool = False, reply_after_s: float = 0.0):
    """A job as `DeviceServer.handle` makes it, answered by a thread as its handler thread would;
    returns the job and the pool process's end of the pipe."""
    pool_end, device_end = Pipe()
    job = Job(np.array([value], np.int64), alone, device_end)
    server.jobs.put(job)

    def answer():
        job.done.wait()
        time.sleep(reply_after_s)
        with contextlib.suppress(OSError):  # as DeviceServer.handle: the pool process went away
            job.reply()

    threading.Thread(target=answer, daemon=True).start()
    return job, pool_end


def messages(pool_end) -> list:
    got = []
    while pool_end.poll(5):
        got.append(pool_end.recv())
        if got[-1][0] != Reply.RUNNING:
            return got
    return got


def run_batches(server: DeviceServer, count: int) -> None:
    for _ in range(count):
        server.run(server.next_batch())


def test_a_run_starts_only_once_the_run_before_has_sent_its_answers():
    """Otherwise a poison input's run could kill the process before a finished neighbour's answer
    left, and that neighbour would be charged a crash it did not cause."""
    session = RecordingSession()
    server = DeviceServer(session, max_batch=4, wait_s=0.0)
    first, first_end = submit(server, 1, alone=True, reply_after_s=0.3)
    submit(server, 2, alone=True)
    run_batches(server, 2)
    assert [values for _, values in session.runs] == [[1], [2]]
    assert first.answered.is_set()
    second_started = session.runs[1][0]
    assert second_started - session.runs[0][0] >= 0.3
    assert messages(first_end)[-1][0] == Reply.OK


def test_alone_images_are_never_batched_and_the_others_are():
    session = RecordingSession()
    server = DeviceServer(session, max_batch=3, wait_s=0.05)
    ends = [submit(server, v, alone=(v == 3))[1] for v in (1, 2, 3, 4, 5, 6, 7)]
    run_batches(server, 4)
    # 1 and 2 gather until 3 (alone) arrives; 3 runs by itself; then up to three at once.
    assert [values for _, values in session.runs] == [[1, 2], [3], [4, 5, 6], [7]]
    for value, pool_end in zip((1, 2, 3, 4, 5, 6, 7), ends, strict=True):
        got = messages(pool_end)
        assert got[0] == (Reply.RUNNING, None)
        assert got[-1][0] == Reply.OK and got[-1][1].tolist() == [value * 2]


def test_a_failed_batch_runs_again_image_by_image_and_only_the_bad_input_fails():
    session = RecordingSession()
    server = DeviceServer(session, max_batch=3, wait_s=0.05)
    ends = [submit(server, v)[1] for v in (1, 255, 3)]
    run_batches(server, 1)
    assert [values for _, values in session.runs] == [[1, 255, 3], [1], [255], [3]]
    outcomes = [messages(pool_end)[-1] for pool_end in ends]
    assert [status for status, _ in outcomes] == [Reply.OK, Reply.ERROR, Reply.OK]
    assert outcomes[1][1] == "ValueError: bad input"


def test_a_pool_process_gone_before_its_answer_does_not_hold_up_the_device():
    session = RecordingSession()
    server = DeviceServer(session, max_batch=1, wait_s=0.0)
    _, gone = submit(server, 1)
    gone.close()  # its pool process was killed (a time limit) while the image waited
    _, waiting = submit(server, 2)
    run_batches(server, 2)
    assert [values for _, values in session.runs] == [[1], [2]]
    assert messages(waiting)[-1][1].tolist() == [4]
