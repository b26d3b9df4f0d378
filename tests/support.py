"""Test helpers: service handles, the tiny model, worker processes, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import redis as redis_lib

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[1]


def redis(db: int | None = None) -> redis_lib.Redis:
    if db is None:
        db = int(os.environ["CVUNET_REDIS_URL"].rsplit("/", 1)[1])
    return redis_lib.Redis(host="127.0.0.1", port=6379, db=db)


def claim_redis_db(run_id: str) -> int:
    """A Redis database number no other concurrent test run holds (locks kept in db 0)."""
    lock = redis(0)
    for number in range(1, 16):
        if lock.set(f"cvunet-test:db:{number}", run_id, nx=True, ex=3 * 3600):
            return number
    raise RuntimeError("all Redis databases 1-15 are claimed by other test runs")


def release_redis_db(number: int, run_id: str) -> None:
    if redis(0).get(f"cvunet-test:db:{number}") == run_id.encode():
        redis(number).flushdb()
        redis(0).delete(f"cvunet-test:db:{number}")


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(name: str) -> None:
    _admin(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with contextlib.suppress(psycopg2.Error):
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_tiny_model(path: Path) -> Path:
    """A CV-UNet-shaped ONNX (input_image HxWx3 -> output_png HxWx4) whose alpha is the brightness."""
    import onnx
    from onnx import TensorProto, helper

    path.parent.mkdir(parents=True, exist_ok=True)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("ReduceMean", ["input_image", "axes"], ["grey"], keepdims=1),
        helper.make_node("Concat", ["input_image", "grey"], ["output_png"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cvunet",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, ["h", "w", 3])],
        [helper.make_tensor_value_info("output_png", TensorProto.FLOAT, ["h", "w", 4])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def start_worker(name: str, log_dir: Path, env: dict) -> subprocess.Popen:
    """A real Celery worker (prefork, concurrency 1) in its own process group."""
    from cvunet_matting.workers import WorkerSpec, command

    log_dir.mkdir(parents=True, exist_ok=True)
    spec = WorkerSpec(name, {"CVUNET_DEVICE": "cpu", **env})
    log_path = log_dir / f"{name.split('@')[0]}-{time.time_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command(spec, "matting", "INFO"),
            cwd=REPO,
            env={**os.environ, **spec.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log_path
    try:
        wait_for(lambda: _pinged(name), timeout=60, message=f"worker {name} did not come up ({log_path})")
    except AssertionError:
        kill_group(proc)
        raise
    return proc


def _pinged(name: str) -> bool:
    from cvunet_matting.celery_app import app

    try:
        replies = app.control.inspect(timeout=0.5).ping() or {}
    except (redis_lib.RedisError, OSError):  # a pooled link to a Redis that was restarted: next try
        return False
    prefix = name.split("@")[0] + "@"
    return any(node.startswith(prefix) for node in replies)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(predicate, timeout: float, message: str = "condition not met", interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} within {timeout}s")


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cvunet_matting.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )


class TcpProxy:
    """A TCP relay in a thread: `stop()` cuts every connection and refuses new ones, like a server going down."""

    def __init__(self, target_port: int, listen_port: int = 0):
        import socket
        import threading

        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", listen_port))
        self.port = self.server.getsockname()[1]
        self.conns: list = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import socket
        import threading

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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _port_open(self.port), 10, "private redis-server did not start", interval=0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # as a crash: nothing is saved (it keeps nothing on disk anyway)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
