"""Fair use: a refused upload stores nothing, inputs no task reads are swept, retries count like new
work, an input that crashed workers is refused whatever task carries it, and one user holds a bounded
number of waits and downloads across every web process."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cvunet_matting import db
from cvunet_matting.cleanup import orphan_inputs
from cvunet_matting.config import get_settings
from cvunet_matting.db import writes
from cvunet_matting.storage.files import Storage, sha256_bytes
from cvunet_matting.web import create_app
from cvunet_matting.webapp import user_limits
from cvunet_matting.worker.watchdog import Watchdog
from tests import support
from tests.support import png_bytes
from tests.support.httpclient import fetch

PARALLEL = 20


@pytest.fixture
def server(clean_state) -> Iterator[str]:
    """The real app on 127.0.0.1, one thread a request, as the tests' browser server runs it."""
    app = create_app()
    httpd = make_server("127.0.0.1", support.free_port(), app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    app.extensions["cvunet.waits"].close()
    httpd.shutdown()
    httpd.server_close()


def post_image(app, user: support.TestUser, data: bytes, name: str = "a.png"):
    return app.test_client().post("/api/v1/images", data={"file": (io.BytesIO(data), name)}, headers=user.bearer)


def form(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart body of (field, filename, bytes) parts, and its Content-Type."""
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for field, name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def send(base: str, user: support.TestUser, n: int) -> int:
    """Request `n`: an image on its own when even, a batch of two when odd; its status."""
    if n % 2 == 0:
        body, ctype = form([("file", f"{n}.png", png_bytes(100 + n))])
        path = "/api/v1/images"
    else:
        body, ctype = form([("files", f"{n}-{i}.png", png_bytes(1000 + 2 * n + i)) for i in range(2)])
        path = "/api/v1/batches"
    status, _, _ = fetch("POST", base + path, body, {"Content-Type": ctype, **user.bearer})
    return status


def input_files() -> set[str]:
    inputs = get_settings().data_dir / "inputs"
    return {p.name for p in inputs.rglob("*") if p.is_file()} if inputs.exists() else set()


def run_dirs() -> set[str]:
    outputs = get_settings().data_dir / "outputs"
    return {p.name for p in outputs.glob("outputs_*")} if outputs.exists() else set()


def waiting_on_owner_lock(owner_id: int) -> int:
    """Transactions waiting for the owner's quota lock (writes.lock_owner)."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = 7312 AND objid = %s",
            (owner_id,),
        )
        return cur.fetchone()["n"]


def owned(owner_id: int) -> tuple[set[str], set[str]]:
    """The input keys of the owner's tasks, and the run folders of their batches."""
    with db.transaction() as cur:
        cur.execute("SELECT input_key FROM tasks WHERE owner_id = %s", (owner_id,))
        keys = {r["input_key"] for r in cur.fetchall()}
        cur.execute("SELECT output_dir FROM batches WHERE owner_id = %s", (owner_id,))
        return keys, {Path(r["output_dir"]).name for r in cur.fetchall()}


# ------------------------------------------------------------------ the quota before the bytes


def test_parallel_uploads_over_the_quota_leave_no_file(server):
    """The finding: 20 uploads at once from a user one image below the limit all passed the cheap
    check, all were written to inputs/, 19 were refused by the binding check, and their files stayed.

    The test holds the user's quota lock while the 20 requests arrive, so that every one of them has
    passed the cheap check and waits for the binding one; then lets them go."""
    user = support.make_user(prefix="race", max_in_flight=2)
    with ThreadPoolExecutor(PARALLEL) as pool, db.transaction() as cur:
        writes.lock_owner(cur, user.id)
        statuses = pool.map(lambda n: send(server, user, n), range(PARALLEL))
        support.wait_until(
            lambda: waiting_on_owner_lock(user.id) == PARALLEL, 60, message="every request at the binding check"
        )
        assert input_files() == set() and run_dirs() == set()  # nothing stored before the check
    statuses = list(statuses)
    assert set(statuses) == {202, 429} and statuses.count(429) >= PARALLEL - 2
    keys, dirs = owned(user.id)
    assert input_files() == keys and len(keys) == 2  # what the accepted ones read, nothing else
    assert run_dirs() == dirs


# ------------------------------------------------------------------ the orphan sweep


def age(path: Path, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_the_hourly_round_removes_inputs_no_task_reads_once_past_the_grace(app, alice):
    """Production defaults (24 h of grace): old unread inputs and dead writers' partial files go;
    an in-flight task's input stays however old, a young unread one stays (it may be being recorded)."""
    storage = Storage(get_settings().data_dir)
    assert post_image(app, alice, png_bytes(7)).status_code == 202
    in_flight = storage.input_path(sha256_bytes(png_bytes(7)))
    orphan, young = storage.input_path(storage.put_input(b"old orphan")), storage.input_path(storage.put_input(b"new"))
    dead_part = in_flight.parent / f".{'e' * 64}.abcdefgh.part"
    live_part = in_flight.parent / f".{'f' * 64}.abcdefgh.part"
    dead_part.write_bytes(b"half"), live_part.write_bytes(b"half")
    for path in (in_flight, orphan, dead_part):
        age(path, 25)
    age(young, 23)

    Watchdog(None, "test", get_settings())._hourly()  # the round the elected worker runs every hour
    assert in_flight.exists() and young.exists() and live_part.exists()
    assert not orphan.exists() and not dead_part.exists()
    assert [p.name for p in in_flight.parent.iterdir() if p.name.startswith(orphan_inputs.ASIDE)] == []


def test_an_input_of_expired_work_only_is_swept(app, alice):
    storage = Storage(get_settings().data_dir)
    answer = post_image(app, alice, png_bytes(8))
    path = storage.input_path(sha256_bytes(png_bytes(8)))
    age(path, 25)
    assert orphan_inputs.sweep(storage, 24 * 3600)["inputs"] == 0
    with db.transaction() as cur:
        writes.expire_tasks(cur, [uuid.UUID(answer.get_json()["task_id"])])
    assert orphan_inputs.sweep(storage, 24 * 3600)["inputs"] == 1 and not path.exists()


def old_input(data: bytes) -> Path:
    storage = Storage(get_settings().data_dir)
    path = storage.input_path(storage.put_input(data))
    age(path, 25)
    return path


def test_a_task_recorded_while_the_sweep_holds_its_input_aside_gets_it_back(clean_state, monkeypatch):
    """The sweep moves an unread file aside, then reads the rows once more before removing it: a task
    recorded in between (its upload found the file still there, and stored nothing) gets it back."""
    data = png_bytes(9)
    path = old_input(data)
    real, looks = orphan_inputs.unread, []

    def unread(keys):
        looks.append(keys)
        if len(looks) == 2:  # the last look, the file aside: a task that reads it is committed now
            assert not path.exists()
            row = {"id": uuid.uuid4(), "filename": "b.png", "input_key": path.name, "options": {}, "output_path": "x"}
            with db.transaction() as cur:
                writes.create_tasks(cur, [row])
        return real(keys)

    monkeypatch.setattr(orphan_inputs, "unread", unread)
    assert orphan_inputs.sweep(Storage(get_settings().data_dir), 24 * 3600)["inputs"] == 0
    assert path.read_bytes() == data and [p.name for p in path.parent.iterdir()] == [path.name]


def test_an_upload_whose_input_the_sweep_took_before_its_commit_stores_it_again(app, alice, monkeypatch):
    """The other order: the upload finds the old file and stores nothing, the sweep (seeing no row yet)
    removes the file, then the upload commits its task: it stores the file again before any worker is
    told of the task."""
    data = png_bytes(10)
    path = old_input(data)
    real, swept = writes.create_tasks, []

    def create_tasks(cur, rows):
        swept.append(orphan_inputs.sweep(Storage(get_settings().data_dir), 24 * 3600))
        assert not path.exists()
        return real(cur, rows)

    monkeypatch.setattr(writes, "create_tasks", create_tasks)
    assert post_image(app, alice, data).status_code == 202
    assert swept == [{"inputs": 1, "partial": 0}]
    assert path.read_bytes() == data


# ------------------------------------------------------------------ retries are new work for the quotas


def fail(task_id: str, code: str = "internal") -> None:
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'failure', error_code = %s WHERE id = %s", (code, task_id))


def retry(app, user: support.TestUser, task_id: str, force: bool = False):
    query = "?force=1" if force else ""
    return app.test_client().post(f"/api/v1/tasks/{task_id}/retry{query}", headers=user.bearer)


def test_retries_count_toward_the_day(app):
    """The finding: a retry skipped the per-day quota, so one failed image could run all day."""
    user = support.make_user(prefix="retries", max_per_day=2)
    first = post_image(app, user, png_bytes(11)).get_json()["task_id"]
    fail(first)
    assert retry(app, user, first).status_code == 202  # the day's second file
    fail(first)
    over = retry(app, user, first)
    assert over.status_code == 429 and over.get_json()["error"]["code"] == "quota_exceeded"
    assert "2 so far" in over.get_json()["error"]["message"] and int(over.headers["Retry-After"]) > 0
    assert post_image(app, user, png_bytes(12)).status_code == 429  # and new work sees the retry too
    admin = support.make_user(admin=True, prefix="admin")
    assert retry(app, admin, first).status_code == 429  # an admin's retry counts for the task's owner


def test_retries_at_once_take_the_in_flight_places_under_the_owners_lock(app):
    """The finding: retries took no in-flight reservation; at once, all passed the cheap check."""
    user = support.make_user(prefix="retries", max_in_flight=1)
    ids = []
    for seed in (20, 21, 22):  # three failed tasks of the user, none in flight
        ids.append(post_image(app, user, png_bytes(seed)).get_json()["task_id"])
        fail(ids[-1])
    with ThreadPoolExecutor(len(ids)) as pool, db.transaction() as cur:
        writes.lock_owner(cur, user.id)  # every retry passes its lookups and waits at the binding check
        statuses = pool.map(lambda t: retry(app, user, t).status_code, ids)
        support.wait_until(lambda: waiting_on_owner_lock(user.id) == len(ids), 60, message="retries at the check")
    assert sorted(statuses) == [202, 429, 429]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks WHERE owner_id = %s AND state = 'pending'", (user.id,))
        assert cur.fetchone()["n"] == 1


# ------------------------------------------------------------------ the crash cap counts the bytes


def test_an_input_that_crashed_workers_fails_at_once_when_sent_again_unless_an_admin_forces_it(
    app, alice, worker_factory
):
    """The finding: the cap counted per task id, so each re-upload of a crashing file cost three more
    crashed workers. Now the bytes are counted: sent again, it fails at once with the `crashed` reason,
    no worker dies for it; an admin's forced retry still runs it (and it crashes again here)."""
    poison = png_bytes(99)
    worker_factory(CVUNET_TEST_CRASH_ON=sha256_bytes(poison))
    first = support.wait_task(post_image(app, alice, poison).get_json()["task_id"], "failure", timeout=180)
    assert first["error_code"] == "crashed" and first["attempts"] == 4  # three crashes, and the run that gave up
    again = support.wait_task(post_image(app, alice, poison, "again.png").get_json()["task_id"], "failure")
    assert again["error_code"] == "crashed" and again["attempts"] == 1 and "died 3 times" in again["error"]
    assert retry(app, alice, str(again["id"]), force=True).get_json()["error"]["code"] == "poison_input"
    admin = support.make_user(admin=True, prefix="admin")
    assert retry(app, admin, str(again["id"]), force=True).status_code == 202
    forced = support.wait_task(str(again["id"]), "failure", timeout=180)
    assert forced["error_code"] == "crashed" and forced["attempts"] == 4  # it really ran: three crashes again
    fine = support.wait_task(post_image(app, alice, png_bytes(98)).get_json()["task_id"], "success")
    assert fine["attempts"] == 1  # other inputs are not held back


# ------------------------------------------------------------------ one user's share of waits and downloads


@pytest.fixture
def two_instances(clean_state, tmp_path) -> Iterator[list[str]]:
    """Two gunicorn instances of the app (one process each), as the stack runs web1 and web2: what one
    user holds must be counted across both."""
    procs, bases = [], []
    for n in range(2):
        port = support.free_port()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics{n}")}
        command = [sys.executable, "-m", "gunicorn", "-c", "python:cvunet_matting.webapp.gunicorn_conf"]
        command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread", "--threads", "16"]
        log = (tmp_path / f"web{n}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [*command, "cvunet_matting.web:create_app()"], env=env, stdout=log, stderr=log, start_new_session=True
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base in bases:
            support.wait_until(lambda b=base: answers(b), 60, message=f"{base} answering")
        yield bases
    finally:
        for proc in procs:
            support.kill_group(proc, signal.SIGTERM)


def answers(base: str) -> bool:
    try:
        return fetch("GET", base + "/healthz", timeout=5)[0] == 200
    except OSError:  # not listening yet
        return False


def error_of(raw: bytes) -> str:
    return json.loads(raw)["error"]["code"]


def test_one_user_holds_at_most_its_waits_across_two_instances(two_instances):
    """The finding: `?wait=` slots were counted per process, so one user could hold all of them.
    Production default: 8 per user, all processes together."""
    user, other = support.make_user(prefix="waiter"), support.make_user(prefix="other")
    body, ctype = form([("file", "a.png", png_bytes(5))])
    status, raw, _ = fetch("POST", two_instances[0] + "/api/v1/images", body, {"Content-Type": ctype, **user.bearer})
    assert status == 202  # no worker runs: it stays pending, and every wait on it is held
    status_url = f"/api/v1/tasks/{json.loads(raw)['task_id']}"
    limit = get_settings().waits_per_user
    assert limit == 8
    cookie = support.http_sign_in(two_instances[1], user)  # the pages' event streams take a session

    def held_wait(n: int):
        return fetch("GET", f"{two_instances[n % 2]}{status_url}?wait=10", headers=user.bearer)

    with ThreadPoolExecutor(limit) as pool:
        waits = [pool.submit(held_wait, n) for n in range(limit)]
        support.wait_until(lambda: user_limits.WAITS.held(user.id) == limit, 60, message="every wait held")
        for base in two_instances:
            status, raw, headers = fetch("GET", f"{base}{status_url}?wait=10", headers=user.bearer)
            assert status == 429 and error_of(raw) == "too_many_waits" and int(headers["Retry-After"]) > 0
            stream = fetch("GET", f"{base}/page/tasks/{status_url.rsplit('/', 1)[1]}/events", headers=cookie)
            assert stream[0] == 429 and error_of(stream[1]) == "too_many_waits"
        assert fetch("GET", f"{two_instances[0]}{status_url}", headers=user.bearer)[0] == 200  # polling still works
        body, ctype = form([("file", "b.png", png_bytes(6))])  # an upload asked to wait is accepted all the same
        upload = fetch("POST", f"{two_instances[1]}/api/v1/images?wait=5", body, {"Content-Type": ctype, **user.bearer})
        assert upload[0] == 202 and "task_id" in json.loads(upload[1])
        assert fetch("GET", f"{two_instances[1]}/api/v1/tasks?wait=1", headers=other.bearer)[0] == 200
        assert [w.result()[0] for w in waits] == [200] * limit
    assert user_limits.WAITS.held(user.id) == 0  # each given back when its request ended
    assert fetch("GET", f"{two_instances[1]}{status_url}?wait=1", headers=user.bearer)[0] == 200


def big_result(user: support.TestUser, size: int = 64 << 20) -> str:
    """A finished task of the user's with a result too large to fit in the sockets' buffers."""
    task_id = uuid.uuid4()
    relative = f"outputs/images/{task_id}/big.png"
    path = get_settings().data_dir / relative
    path.parent.mkdir(parents=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    row = {"id": task_id, "filename": "big.png", "input_key": "", "options": {}, "output_path": relative}
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        writes.set_owner(cur, user.id, task_ids=[task_id])
        cur.execute("UPDATE tasks SET state = 'success' WHERE id = %s", (task_id,))
    return str(task_id)


def start_download(base: str, path: str, headers: dict) -> socket.socket:
    """A download whose body this client does not read: the server's thread holds it."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(lines).encode())
    return sock


def test_one_user_holds_at_most_its_downloads_across_two_instances(two_instances):
    """Slow downloads held every thread; now one user receives at most 16 files at once (the
    production default), all processes together, and a place is given back when its download ends."""
    user = support.make_user(prefix="downloader")
    task_id = big_result(user)
    path = f"/api/v1/tasks/{task_id}/result"
    limit = get_settings().downloads_per_user
    assert limit == 16
    held = [start_download(two_instances[n % 2], path, user.bearer) for n in range(limit)]
    try:
        support.wait_until(lambda: user_limits.DOWNLOADS.held(user.id) == limit, 60, message="downloads held")
        for base in two_instances:
            status, raw, headers = fetch("GET", base + path, headers=user.bearer)
            assert status == 429 and error_of(raw) == "too_many_downloads" and int(headers["Retry-After"]) > 0
    finally:
        for sock in held:
            sock.close()
    support.wait_until(lambda: user_limits.DOWNLOADS.held(user.id) == 0, 60, message="places given back")
    status, raw, _ = fetch("GET", two_instances[0] + path, headers=user.bearer)
    assert status == 200 and len(raw) == 64 << 20
