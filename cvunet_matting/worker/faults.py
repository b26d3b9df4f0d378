"""Fault injection, for the fault and failover tests only: never set in production, and absent from
the settings (config.py) and README's table.

CVUNET_TEST_CRASH_ON: comma-separated input keys on which a worker kills itself, as an OOM kill would.
CVUNET_TEST_DELAY_S: extra seconds every image holds its worker, as a slow device would.
Read from the environment once per process, on its first image.
CVUNET_TEST_READONLY_FLAG: a file (outside the data root); while it exists, every change a worker
process makes under the data root fails with EROFS, as on a data root remounted read-only. When the
file holds a shell pattern (fnmatch), only paths that match it fail. Installed at process start.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Faults:
    crash_on_inputs: frozenset[str]
    delay_s: float


@lru_cache(maxsize=1)
def faults() -> Faults:
    """The faults this process's environment asks for."""
    crash_on = os.environ.get("CVUNET_TEST_CRASH_ON", "")
    delay = os.environ.get("CVUNET_TEST_DELAY_S", "").strip()
    return Faults(frozenset(key.strip() for key in crash_on.split(",") if key.strip()), float(delay or 0))


def inject_faults(input_key: str) -> None:
    """Die like an OOM-killed process on a chosen input, or hold every image longer."""
    if input_key in faults().crash_on_inputs:
        os.kill(os.getpid(), signal.SIGKILL)
    if faults().delay_s:
        time.sleep(faults().delay_s)


# Flags of an open() that writes: a read-only mount refuses them, and lets reads through.
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Audit events (sys.addaudithook) that change the paths among their arguments.
CHANGE_EVENTS = frozenset({"os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.truncate"})


@lru_cache(maxsize=1)
def install_storage_faults(data_dir: Path) -> None:
    """A read-only data root on demand (CVUNET_TEST_READONLY_FLAG), for the storage tests.

    An audit hook aborts the very call that would change a file under the root (open for writing,
    mkdir, rename, unlink, rmdir...) with the OSError a read-only mount gives: the code under test
    meets it where real I/O would, through its own open(), mkdir() and copyfile(). A hook cannot be
    removed, so it is installed only where the variable is set."""
    flag = os.environ.get("CVUNET_TEST_READONLY_FLAG", "").strip()
    if not flag:
        return
    root = os.path.abspath(data_dir) + os.sep

    def read_only(event: str, args: tuple) -> None:
        if event == "open":
            paths = (args[0],) if isinstance(args[2], int) and args[2] & WRITE_FLAGS else ()
        elif event in CHANGE_EVENTS:
            paths = args
        else:
            return
        for path in paths:
            if isinstance(path, str | bytes | os.PathLike) and _refused(os.path.abspath(os.fsdecode(path)), root, flag):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    sys.addaudithook(read_only)


def _refused(path: str, root: str, flag: str) -> bool:
    if not path.startswith(root):
        return False
    try:
        pattern = Path(flag).read_text().strip()
    except FileNotFoundError:  # storage is back
        return False
    return not pattern or fnmatch.fnmatch(path, pattern)
