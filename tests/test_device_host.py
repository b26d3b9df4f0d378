"""The overlapped worker's main process: restarting the device process must not race the pool's forks."""

from __future__ import annotations

import os
import threading
import time

from cvunet_matting.worker import device_host


def test_a_pool_fork_waits_while_the_device_process_is_spawned():
    """A process forked during the spawn would inherit Popen's exec pipe and hang the restart (seen
    under load: the device never came back after a crash): forks wait for the spawn to finish."""
    device_host.hold_forks_while_spawning()
    device_host.hold_forks_while_spawning()  # once only: a second registration would deadlock a fork
    forked_at: list[float] = []

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked_at.append(time.monotonic())
        os.waitpid(pid, 0)

    with device_host.spawn_lock:
        thread = threading.Thread(target=fork)
        thread.start()
        time.sleep(0.5)
        released_at = time.monotonic()
    thread.join(10)
    assert forked_at and forked_at[0] >= released_at
    assert not device_host.spawn_lock.locked()
