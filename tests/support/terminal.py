"""A command run in a pseudo-terminal, as a person at a terminal sees it: progress bars drawn, Ctrl-C typed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
from pathlib import Path

COLUMNS, ROWS = 120, 40
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, cursor moves, line clears


class Terminal:
    """`argv` on a pty of COLUMNS x ROWS; everything it writes (stdout and stderr) is kept in `text`."""

    def __init__(self, argv: list[str], env: dict, cwd: Path | None = None):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
        )
        os.close(slave)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # EIO once the child side is closed
            while data := os.read(self.master, 65536):
                self._chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    @property
    def plain(self) -> str:
        """What was written, its terminal control sequences taken out."""
        return ESCAPES.sub("", self.text)

    def interrupt(self) -> None:
        """Ctrl-C as typed: the terminal sends SIGINT to the command's process group."""
        os.killpg(self.proc.pid, 2)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        os.close(self.master)
        return code
