"""A command run in a pseudo-terminal, as a person at a terminal sees it: progress bars drawn, Ctrl-C typed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
from pathlib import Path

COLUMNS, ROWS = 120, 40
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, cursor moves, line clears


def as_a_shell_starts_it() -> None:
    """The child's signals as a shell leaves them for a command it starts: Ctrl-C's SIGINT neither ignored
    nor blocked. Both are inherited through exec, and the test process may hold either (a library's
    thread blocking signals, a pool ignoring SIGINT): the command would then never see the Ctrl-C typed."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Terminal:
    """`argv` on a pty of COLUMNS x ROWS; everything it writes (stdout and stderr) is kept in `text`."""

    def __init__(self, argv: list[str], env: dict, cwd: Path | None = None):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=as_a_shell_starts_it,  # noqa: PLW1509 (async-signal-safe calls only, before exec)
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

    def signal_state(self) -> str:
        """The command's signal masks as the kernel holds them (ignored, blocked, pending): for a failure."""
        try:
            lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        except OSError as exc:
            return f"no status: {exc}"
        return ", ".join(line for line in lines if line.startswith(("SigIgn", "SigBlk", "SigPnd", "ShdPnd", "State")))

    def interrupt(self) -> None:
        """Ctrl-C as typed: the terminal sends SIGINT to the command's process group."""
        os.killpg(self.proc.pid, 2)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"still running after {timeout} s: {self.signal_state()}\n{self.plain}") from exc
        self._reader.join(timeout=10)
        os.close(self.master)
        return code
