"""Ports, a TCP relay that can be cut, and a private redis-server that can really restart."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading

from .tools import require_tool
from .waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class TcpProxy:
    """A TCP relay in a thread: `stop()` cuts every connection and refuses new ones, like a server going down."""

    def __init__(self, target_port: int, listen_port: int = 0):
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", listen_port))
        self.port = self.server.getsockname()[1]
        self.conns: list = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.running:
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def stop(self) -> None:
        self.running = False
        # close() alone does not wake a thread blocked in accept(): it would take one more client.
        with contextlib.suppress(OSError):
            self.server.shutdown(2)
        self.server.close()
        for sock in self.conns:
            with contextlib.suppress(OSError):
                sock.shutdown(2)
                sock.close()
        self.conns.clear()

    def restart(self) -> TcpProxy:
        return TcpProxy(self.target_port, self.port)


class PrivateRedis:
    """A redis-server of our own on a free port: restarted for real, or run with a password."""

    def __init__(self, password: str | None = None):
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        server = require_tool("redis-server")
        argv = [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 10, interval=0.05, message="private redis-server did not start")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # as a crash: nothing is saved (it keeps nothing on disk anyway)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
