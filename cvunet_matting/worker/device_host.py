"""An overlapped worker's device process, from its main process: started before the pool forks (its
socket and key reach the pool processes through the environment), restarted if it dies, stopped once
the pool has finished its images. When each happens is the worker's DeviceHostStep (steps.py).

A device that cannot start (no CUDA, a broken driver, a bad model) stops the worker instead: at
start, before it takes any image (it exits, and its supervisor or compose starts it again); later,
after MAX_FAILED_STARTS restarts in a row that never served, by a cold shutdown, so that the images
it holds go back to the queue for another worker instead of waiting out the time limit here."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .device_protocol import AUTHKEY_ENV, CONNECT_TIMEOUT_S, SOCKET_ENV

log = logging.getLogger(__name__)
MAX_FAILED_STARTS = 5  # restarts in a row whose process exited before it served: the device is gone
EXIT_NO_DEVICE = 3  # the worker's exit status when its device never started


class DeviceUnavailable(Exception):
    """The device process exited, or never listened, before it could serve a single image."""


# Popen waits for its child's exec on a close-on-exec pipe. A pool process billiard forks (os.fork,
# no exec) in that moment inherits the pipe's write end and holds it until it exits, so the restart
# hung for as long as that pool process lived (seen: the device crashed, its images' pool processes
# were replaced at the same moment, and the device never came back). The pool's forks wait for a
# spawn here instead, through os.register_at_fork.
spawn_lock = threading.Lock()


@functools.cache  # registered once: a second registration would take the lock twice and hang a fork
def hold_forks_while_spawning() -> None:
    release = spawn_lock.release
    os.register_at_fork(before=spawn_lock.acquire, after_in_parent=release, after_in_child=release)


class DeviceHost:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cvunet-device-"))
        self.address = str(self.folder / "device.sock")
        self.authkey = secrets.token_bytes(32)
        self.proc: subprocess.Popen | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        hold_forks_while_spawning()
        # Set before the pool forks: every pool process inherits where the device is, and its key.
        os.environ[SOCKET_ENV] = self.address
        os.environ[AUTHKEY_ENV] = self.authkey.hex()
        proc = self._spawn()
        self.wait_serving(proc)
        threading.Thread(target=self._watch, args=(proc,), name="device-host", daemon=True).start()

    def _spawn(self) -> subprocess.Popen:
        argv = [sys.executable, "-m", "cvunet_matting.worker.device_server", "--socket", self.address]
        with spawn_lock:
            proc = subprocess.Popen([*argv, "--parent", str(os.getpid())])
        self.proc = proc
        log.info("device process started (pid %d)", proc.pid)
        return proc

    def wait_serving(self, proc: subprocess.Popen, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Until the device process `proc` listens (it has loaded the model); DeviceUnavailable if it
        exits first, or does not listen within `timeout` (TensorRT's first engine build takes minutes)."""
        deadline = time.monotonic() + timeout
        while not Path(self.address).exists():
            code = proc.poll()
            if code is not None:
                raise DeviceUnavailable(f"the device process exited with {code} before it could serve (see above)")
            if time.monotonic() > deadline:
                proc.kill()
                raise DeviceUnavailable(f"the device process did not serve within {timeout:.0f}s")
            time.sleep(0.1)

    def _watch(self, proc: subprocess.Popen) -> None:
        failed_starts = 0
        while not self.stopping.is_set():
            code = proc.wait()
            if self.stopping.is_set():
                return
            # Its pool processes' images in hand fail with DeviceLost and go back to the queue.
            log.error("device process exited with %s; starting another", code)
            time.sleep(1.0)
            Path(self.address).unlink(missing_ok=True)  # the last one's: only a new listener counts
            proc = self._spawn()
            try:
                self.wait_serving(proc)
                failed_starts = 0
            except DeviceUnavailable as exc:
                failed_starts += 1
                if failed_starts >= MAX_FAILED_STARTS:
                    log.critical("%s, %d times in a row: stopping this worker; its images go back", exc, failed_starts)
                    os.kill(os.getpid(), signal.SIGQUIT)  # Celery's cold shutdown
                    return

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the pool has finished: nothing is in hand any more
            self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)
