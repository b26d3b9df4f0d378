"""Signal handlers of an overlapped worker's main process: start the device process before the
pool forks (its socket and key reach the pool processes through the environment), restart it if it
dies, stop it once the pool has finished its images."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from celery import signals

from .config import get_settings
from .device_client import AUTHKEY_ENV, SOCKET_ENV
from .overlap import overlap_of

log = logging.getLogger(__name__)
_state: dict = {}

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
    def __init__(self):
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
        self._spawn()
        threading.Thread(target=self._watch, name="device-host", daemon=True).start()

    def _spawn(self) -> None:
        argv = [sys.executable, "-m", "cvunet_matting.device_server", "--socket", self.address]
        with spawn_lock:
            self.proc = subprocess.Popen([*argv, "--parent", str(os.getpid())])
        log.info("device process started (pid %d)", self.proc.pid)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            code = self.proc.wait()
            if self.stopping.is_set():
                return
            # Its pool processes' images in hand fail with DeviceLost and go back to the queue.
            log.error("device process exited with %s; starting another", code)
            time.sleep(1.0)
            self._spawn()

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the pool has finished: nothing is in hand any more
            self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


@signals.worker_init.connect
def on_worker_init(**_):
    settings = get_settings()
    if settings.worker_role == "model" and overlap_of(settings).enabled and "host" not in _state:
        _state["host"] = DeviceHost()
        _state["host"].start()


@signals.worker_shutdown.connect
def on_worker_shutdown(**_):
    host = _state.pop("host", None)
    if host is not None:
        host.stop()
