"""The whole stack through the real Traefik binary: 2 gunicorn instances, a worker, Flower, Prometheus."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import stat
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cvunet_matting import db
from cvunet_matting.db import reads
from tests import support
from tests.support import png_bytes
from tests.support.accounts import CSRF_META
from tests.support.httpclient import matte_over_http, multipart, request
from tests.support.stack import free_ports

pytestmark = [pytest.mark.services, pytest.mark.stack]
STALE = "counter_999999999.db"
PROMETHEUS_HINT = "apt-get install prometheus prometheus-node-exporter (`make machine` runs .ci/prepare-machine)"


@pytest.fixture(scope="module")
def stack(database, tmp_root):
    support.require_tool("traefik")  # the stack looks for it where require_tool does
    from cvunet_matting.devstack.run import wait_ready
    from cvunet_matting.devstack.stack import Stack

    ports = free_ports()
    # A short scrape interval, so Prometheus has read every target within seconds.
    stack = Stack(tmp_root / "stack", ports, workers=1, flower_password="flower-test-pw", scrape_interval="2s")
    # A file an earlier run left: web2's start must empty its metrics folder, or it would be summed in.
    stack.metrics_dir(1).mkdir(parents=True)
    (stack.metrics_dir(1) / STALE).write_bytes(b"left by an earlier run")
    stack.start()
    try:
        wait_ready(stack.url, stack, timeout=90)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def user(database) -> support.TestUser:
    """The API wants a key: a user in the database the stack's web instances read."""
    return support.make_user()


def test_upload_through_traefik_gives_a_result_and_a_postgres_row(stack, user):
    outcome = matte_over_http(stack.url, "through traefik.png", png_bytes(7), auth=user.bearer)
    assert outcome["ok"], outcome
    assert outcome["bytes"] > 100
    with db.transaction() as cur:
        row = reads.get_task(cur, outcome["task_id"])
    assert row["state"] == "success" and row["filename"] == "through traefik.png"


def test_requests_still_succeed_with_one_web_instance_down(stack, user):
    stack.procs["web1"].send_signal(signal.SIGTERM)
    stack.procs["web1"].wait(timeout=30)
    try:
        results = [request("GET", f"{stack.url}/healthz")[0] for _ in range(30)]
        assert results == [200] * 30
        outcome = matte_over_http(stack.url, "one-down.png", png_bytes(8), auth=user.bearer)
        assert outcome["ok"], outcome
    finally:
        stack.start_web(0)


def basic(user: str, password: str) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def web1_up(stack) -> None:
    """A test before may have restarted web1: wait until it answers, so no request meets it half-started."""
    web1 = f"http://127.0.0.1:{stack.ports.web[0]}/healthz"
    support.wait_until(
        lambda: support.port_open(stack.ports.web[0]) and request("GET", web1)[0] == 200,
        60,
        message="web1 back",
    )


def test_a_web_instance_keeps_an_idle_connection_for_the_next_request(stack):
    """Traefik sends a request down a connection it kept idle, for up to 90 s: gunicorn must not have closed
    it meanwhile (its default 2 s did, and a POST meeting the close came back a 502). A second request on one
    connection after 3 s idle: answered."""
    web1_up(stack)
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.web[0], timeout=10)
    try:
        answers = []
        for pause in (0, 3):
            time.sleep(pause)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection", "").lower()))
            if pause == 0:
                first_socket = conn.sock
        assert answers == [(200, "keep-alive"), (200, "keep-alive")]
        assert conn.sock is first_socket  # the same connection, not a new one opened behind our back
    finally:
        conn.close()


def test_flower_needs_a_signed_in_admin_and_its_password(stack):
    web1_up(stack)
    flower = basic("admin", "flower-test-pw")
    assert request("GET", f"{stack.url}/flower/")[0] == 401
    assert request("GET", f"{stack.url}/flower/workers", headers=flower)[0] == 401  # the password alone: no
    admin = support.make_user(admin=True, prefix="stack-admin")
    signed_in = support.http_sign_in(stack.url, admin)
    assert request("GET", f"{stack.url}/flower/workers", headers=signed_in)[0] == 401  # Flower's own password
    status, body = request("GET", f"{stack.url}/flower/workers", headers={**signed_in, **flower})
    assert status == 200 and b"cpu0@" in body
    someone = support.http_sign_in(stack.url, support.make_user(prefix="stack-user"))
    assert request("GET", f"{stack.url}/flower/workers", headers={**someone, **flower})[0] == 403
    # Its password went by environment: `ps` (every local user) never shows it.
    argv = Path(f"/proc/{stack.procs['flower'].pid}/cmdline").read_bytes()
    assert b"flower" in argv and b"flower-test-pw" not in argv


def get_unfollowed(stack, path: str, headers: dict | None = None):
    """(status, Location): urllib would follow the redirect."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.http, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Location")
    finally:
        conn.close()


def test_a_signed_out_browser_opening_flower_is_sent_to_sign_in_and_back(stack):
    web1_up(stack)
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    assert get_unfollowed(stack, "/flower", browser) == (301, f"{stack.url}/flower/")
    status, location = get_unfollowed(stack, "/flower/tasks?state=FAILURE", browser)
    target = urllib.parse.urlsplit(location)
    assert status == 302 and target.path == "/login"
    # Back to Flower; to the very page where Traefik's X-Forwarded-Uri reaches the app (compose's check
    # asks the app directly; this stack's goes through its own entrypoint, which drops the header).
    assert urllib.parse.parse_qs(target.query)["next"][0].startswith("/flower/")
    assert get_unfollowed(stack, "/flower/", {"Accept": "*/*"})[0] == 401  # a script keeps its 401


def test_an_upload_over_traefiks_limit_gets_the_apps_json_error(stack, user):
    """Traefik refuses by Content-Length before reading the body; the headers alone are sent, as a
    client still sending would be cut off (reset) before it could read the answer."""
    for path in ("/api/v1/images", "/page/batches"):
        conn = http.client.HTTPConnection("127.0.0.1", stack.ports.http, timeout=10)
        try:
            conn.putrequest("POST", path)
            for name, value in {**user.bearer, "Content-Type": "multipart/form-data; boundary=x"}.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(64 * 1024 * 1024 + 1))
            conn.endheaders()
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        assert response.status == 413 and response.getheader("Content-Type") == "application/json", (path, raw)
        assert json.loads(raw)["error"]["code"] == "too_large"


def test_flowers_admin_check_outlives_web1(stack):
    """The admin check goes through Traefik's app service (both instances), not to web1 alone."""
    web1_up(stack)
    admin = support.http_sign_in(stack.url, support.make_user(admin=True, prefix="flower-web1-down"))
    stack.procs["web1"].send_signal(signal.SIGTERM)
    stack.procs["web1"].wait(timeout=30)
    # gunicorn_conf's hooks ran as its workers and then it exited (child_exit, on_exit): no error.
    assert "Traceback" not in (stack.run_dir / "logs" / "web1.log").read_text(errors="replace")
    try:
        flower = basic("admin", "flower-test-pw")
        status, body = request("GET", f"{stack.url}/flower/workers", headers={**admin, **flower})
        assert status == 200 and b"cpu0@" in body
    finally:
        stack.start_web(0)


def pending_task_of(user: support.TestUser) -> str:
    """A task row of the user's with no message: pending until the watchdog's reconcile republishes it
    (seconds later: rows younger than its settle time are left alone). End it with ended_by_hand."""
    import uuid

    from cvunet_matting.db import writes

    row = {"id": uuid.uuid4(), "filename": "held.png", "input_key": "none", "options": {}, "output_path": "/none"}
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        writes.set_owner(cur, user.id, task_ids=(row["id"],))
    return str(row["id"])


def ended_by_hand(task_id: str) -> None:
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'failure', error = 'ended by the test' WHERE id = %s", (task_id,))


def test_a_stopping_web_instance_answers_the_stream_it_holds(stack):
    """SIGTERM while web1 holds a task's event stream (open up to 30 s, past web1's 20 s graceful timeout):
    the stream ends cleanly and at once, where gunicorn used to wait for it and then cut it off."""
    web1_up(stack)
    user = support.make_user(prefix="held")
    cookie = support.http_sign_in(stack.url, user)
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.web[0], timeout=60)
    task_id = pending_task_of(user)
    try:
        conn.request("GET", f"/page/tasks/{task_id}/events", headers=cookie)
        response = conn.getresponse()
        assert response.status == 200
        first = b""
        while b"event: change" not in first:  # the state as it is: the stream now holds its wait slot
            first += response.read1(4096)
        stack.procs["web1"].send_signal(signal.SIGTERM)
        rest = response.read()  # IncompleteRead, had the stream been cut off
        assert b"event" not in rest and response.isclosed()
        stack.procs["web1"].wait(timeout=30)
    finally:
        ended_by_hand(task_id)
        conn.close()
        stack.start_web(0)


def test_two_users_and_an_admin_through_traefik(stack):
    """Each user's work is theirs alone; an admin sees all, and alone reaches /metrics and folders."""
    web1_up(stack)
    alice = support.make_user(prefix="alice")
    bob = support.make_user(prefix="bob")
    admin = support.make_user(admin=True, prefix="boss")
    done = matte_over_http(stack.url, "alice-only.png", png_bytes(60), auth=alice.bearer)
    assert done["ok"], done
    task = f"{stack.url}/api/v1/tasks/{done['task_id']}"
    for path in ("", "/result", "/input"):
        assert request("GET", task + path, headers=bob.bearer)[0] == 404, path
        assert request("GET", task + path, headers=admin.bearer)[0] == 200, path
        assert request("GET", task + path)[0] == 401, path
    assert request("POST", task + "/retry", headers=bob.bearer)[0] == 404
    bob_session, alice_session = (support.http_sign_in(stack.url, u) for u in (bob, alice))
    assert b"alice-only.png" not in request("GET", f"{stack.url}/history", headers=bob_session)[1]
    assert b"alice-only.png" in request("GET", f"{stack.url}/history", headers=alice_session)[1]
    admin_session = support.http_sign_in(stack.url, admin)
    assert b"alice-only.png" in request("GET", f"{stack.url}/history", headers=admin_session)[1]
    # Alice's own session opens her result on the pages' routes, never on the API.
    assert request("GET", f"{stack.url}/page/tasks/{done['task_id']}/result", headers=alice_session)[0] == 200
    assert request("GET", task, headers=alice_session)[0] == 401
    # An anonymous page session and its CSRF token: refused by the API (the finding).
    status, raw, headers = support_fetch(f"{stack.url}/login")
    cookie = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}
    token = CSRF_META.search(raw.decode()).group(1)
    body, ctype = multipart("file", "x.png", png_bytes(61))
    forged = {"Content-Type": ctype, "X-CSRF-Token": token, **cookie}
    assert request("POST", f"{stack.url}/api/v1/images", body, forged)[0] == 401
    # /metrics: nobody anonymous, no plain user, an admin.
    assert request("GET", f"{stack.url}/metrics")[0] == 401
    assert request("GET", f"{stack.url}/metrics", headers=alice.bearer)[0] == 403
    status, text = request("GET", f"{stack.url}/metrics", headers=admin.bearer)
    assert status == 200 and b"cvunet_tasks" in text
    # The folder API is for admins.
    folder = json.dumps({"folder": "nowhere"}).encode()
    as_json = {"Content-Type": "application/json"}
    assert request("POST", f"{stack.url}/api/v1/batches/folder", folder, {**as_json, **alice.bearer})[0] == 403
    assert request("POST", f"{stack.url}/api/v1/batches/folder", folder, {**as_json, **admin.bearer})[0] == 404
    # A quota answers 429 with Retry-After through the proxy; one no wait can satisfy, 422.
    capped = support.make_user(prefix="capped", max_per_day=1)
    as_capped = {"Content-Type": ctype, **capped.bearer}
    assert support_fetch(f"{stack.url}/api/v1/images", body, as_capped)[0] == 202
    status, raw, headers = support_fetch(f"{stack.url}/api/v1/images", body, as_capped)
    assert status == 429 and int(headers["Retry-After"]) > 0
    closed = support.make_user(prefix="closed", max_in_flight=0)
    status, raw, headers = support_fetch(f"{stack.url}/api/v1/images", body, {"Content-Type": ctype, **closed.bearer})
    assert status == 422 and json.loads(raw)["error"]["code"] == "batch_too_large" and "Retry-After" not in headers


def support_fetch(url: str, body: bytes | None = None, headers: dict | None = None):
    from tests.support.httpclient import fetch

    return fetch("POST" if body else "GET", url, body, headers or {})


def test_api_refuses_bad_input_with_json_through_traefik(stack, user):
    body, ctype = multipart("file", "notes.txt", b"hello, not an image")
    status, raw = request("POST", f"{stack.url}/api/v1/images", body, {"Content-Type": ctype, **user.bearer})
    assert (status, json.loads(raw)["error"]["code"]) == (415, "not_an_image")


def requests_counted(exposition: str, endpoint: str) -> float:
    """cvunet_http_requests_total for one endpoint, summed over its other labels (method, status)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "cvunet_http_requests_total" and sample.labels["endpoint"] == endpoint
    )


def counted_by_each_process(folder: Path, endpoint: str, scratch: Path) -> list[float]:
    """What each gunicorn process counted alone: what a scrape it answered would say without the sum."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = []
    for path in sorted(folder.glob("counter_*.db")):
        alone = scratch / path.stem
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts.append(requests_counted(generate_latest(registry).decode(), endpoint))
    return counts


def test_metrics_of_a_web_instance_add_up_all_its_processes(stack, tmp_path):
    """web2's gunicorn processes each count the requests they served; one scrape, whichever process
    answers it, reports them all, and the scrape-time gauges once."""
    web2 = f"http://127.0.0.1:{stack.ports.web[1]}"
    folder = stack.metrics_dir(1)
    assert not (folder / STALE).exists()  # emptied when web2 started
    endpoint = "/api/v1/openapi.json"
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        # Concurrent, so both processes take some (the kernel picks which one accepts a connection).
        for _ in range(10):
            codes = list(pool.map(lambda _: request("GET", web2 + endpoint)[0], range(40)))
            assert codes == [200] * 40
            sent += 40
            alone = counted_by_each_process(folder, endpoint, tmp_path)
            if sum(count > 0 for count in alone) >= 2:
                break
    assert sum(count > 0 for count in alone) >= 2, alone
    assert max(alone) < sent  # so no single process's own count could pass the check below
    admin = support.make_user(admin=True, prefix="metrics-sum")
    for _ in range(6):  # several scrapes, answered by either process
        status, text = request("GET", f"{web2}/metrics", headers=admin.bearer)
        assert status == 200
        exposition = text.decode()
        assert requests_counted(exposition, endpoint) >= sent
        # The ScrapeCollector's gauges come from the answering process alone: each series once.
        lines = [line for line in exposition.splitlines() if not line.startswith("#")]
        assert sum(line.startswith("cvunet_queue_length ") for line in lines) == 1
        assert sum(line.startswith('cvunet_tasks{state="success"}') for line in lines) == 1


def prometheus_api(stack, path: str) -> dict:
    status, body = request("GET", f"{stack.prometheus_url}/api/v1/{path}")
    assert status == 200, body
    return json.loads(body)["data"]


def target_health(stack) -> dict[tuple[str, str], str]:
    """(job, instance) -> "up", or the last scrape's error."""
    return {
        (t["labels"]["job"], t["labels"]["instance"]): t["health"] if t["health"] == "up" else t["lastError"]
        for t in prometheus_api(stack, "targets")["activeTargets"]
    }


def series(stack, query: str) -> list:
    return prometheus_api(stack, "query?query=" + urllib.parse.quote(query))["result"]


def test_prometheus_scrapes_both_web_instances_the_worker_and_the_node_with_the_rules(stack, user):
    support.require_tool("prometheus", PROMETHEUS_HINT)  # installed: the stack must have started it
    assert stack.prometheus_url, "prometheus is installed but the stack did not start it"
    web1_up(stack)  # a test before restarted it
    done = matte_over_http(stack.url, "scraped.png", png_bytes(70), auth=user.bearer)
    assert done["ok"], done
    expected = {("web", f"127.0.0.1:{port}") for port in stack.ports.web}
    expected.add(("workers", f"127.0.0.1:{stack.ports.worker_metrics}"))
    if support.find_tool("prometheus-node-exporter") or support.find_tool("node_exporter"):
        expected.add(("node", f"127.0.0.1:{stack.ports.node_exporter}"))
    try:
        support.wait_until(lambda: all(target_health(stack).get(t) == "up" for t in expected), 60, interval=1)
    except AssertionError:
        pytest.fail(f"targets not all up: {target_health(stack)}")
    # Read with the stack's own admin key (web) and from the worker's pool process (the task above).
    assert support.wait_until(lambda: series(stack, "cvunet_http_requests_total"), 20, message="web series")
    assert support.wait_until(lambda: series(stack, "cvunet_worker_tasks_total"), 20, message="worker series")
    key_file = stack.run_dir / "prometheus" / "web-token"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The alert rules compose loads, loaded here too.
    rules = {rule["name"] for group in prometheus_api(stack, "rules")["groups"] for rule in group["rules"]}
    assert {"WorkerDown", "TaskFailureRateHigh"} <= rules
