"""The compose stack for real: images built, containers running, everything through Traefik over HTTPS.

Run by `make compose-test` (docker/ci/compose-test.sh), which starts dockerd, builds the images,
brings up docker/compose.yml with docker/compose.ci.yml (three CPU workers) and calls
`pytest -m compose` with COMPOSE_TEST_ENV set; `make test` deselects this module. Tests run in file
order: the end-to-end path with the real model first, then scaling and node failures with the
tests' tiny model, each image held a few seconds as a device would hold it. Figures go to
$COMPOSE_TEST_STATE/figures.json (the script prints them).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import secrets
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO, png_bytes, wait_until
from tests.support.httpclient import multipart

pytestmark = pytest.mark.compose

WORKERS = ["worker-cpu0", "worker-cpu1", "worker-cpu2"]
TINY_MODEL = "/opt/ci-models/tiny-cvunet.onnx"
HOLD_S = 4  # each image holds its worker this long in the failover tests (CVUNET_TEST_DELAY_S)
# What the failover tests assert: recovery well inside a minute, where the visibility timeout alone
# would take an hour. The 10 s target is a figure, printed and recorded (this shared 2-core host is
# too noisy for a timed assert): see RELIABILITY.md.
FAILOVER_BOUND_S = 60
FIGURES: dict = {}
# Seeds of this run's images: identical inputs would reuse an earlier run's results on a kept stack.
SEED = secrets.randbelow(10**6) * 10_000


# --- the stack ----------------------------------------------------------------------------------


class Stack:
    """docker-compose, HTTPS through Traefik, and the published PostgreSQL and Redis of one test stack."""

    def __init__(self, env_file: Path):
        self.env_file = env_file
        self.env = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#"
        )
        # Traefik's published address: not loopback (compose-test.sh), so it sees each client's own.
        self.host = self.env.get("HTTP_BIND", "127.0.0.1")
        self.base = f"https://{self.host}:{self.env['HTTPS_PORT']}"
        self.token = self.env["CVUNET_API_TOKENS"].split(",")[0]
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False  # Traefik's self-signed default certificate
        self.tls.verify_mode = ssl.CERT_NONE
        self.overrides: dict[str, str] = {}

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess:
        argv = ["docker-compose", "-p", self.env["COMPOSE_PROJECT_NAME"], "-f", "docker/compose.yml"]
        argv += ["-f", "docker/compose.ci.yml", "--env-file", str(self.env_file), *args]
        env = {**os.environ, **self.overrides}
        result = subprocess.run(
            argv, cwd=REPO, env=env, input=input_text, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-2000:]}"
        return result

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str, fmt: str) -> str:
        out = subprocess.run(["docker", "inspect", "-f", fmt, self.container(service)], capture_output=True, text=True)
        return out.stdout.strip()

    def health(self, service: str) -> str:
        """`healthy` (or `running` without a health check) while it runs, else its state (exited...)."""
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        state, _, health = self.inspect(service, fmt).partition(" ")
        return (health or state) if state == "running" else state

    def crash(self, service: str) -> float:
        """SIGKILL the container's whole process tree from the host, as a crash would; returns when."""
        pid = int(self.inspect(service, "{{.State.Pid}}"))
        os.kill(pid, signal.SIGKILL)
        return time.time()

    def exec(self, service: str, *argv: str) -> str:
        return self.compose("exec", "-T", service, *argv, timeout=60).stdout

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, auth=True):
        """(status, body, headers) through Traefik; a network error is status 0."""
        headers = dict(headers or {})
        if auth and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.tls) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers
        except OSError as exc:
            return 0, repr(exc).encode(), {}

    def upload(self, name: str, data: bytes) -> tuple[int, dict]:
        body, ctype = multipart("file", name, data, {"format": "png"})
        status, raw, _ = self.request("POST", "/api/v1/images", body, {"Content-Type": ctype})
        return status, json.loads(raw) if status == 202 else {"error": raw[:300]}

    def submit_batch(self, files: list[tuple[str, bytes]]) -> str:
        body, ctype = multipart_many(files)
        status, raw, _ = self.request("POST", "/api/v1/batches", body, {"Content-Type": ctype})
        assert status == 202, raw[:500]
        return json.loads(raw)["batch_id"]

    def sql(self, query: str, *args) -> list[dict]:
        import psycopg2
        import psycopg2.extras

        dsn = dict(host="127.0.0.1", port=self.env["POSTGRES_PORT"], user="cvunet", dbname="cvunet")
        conn = psycopg2.connect(**dsn, password=self.env["POSTGRES_PASSWORD"])
        try:
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query, args)
                rows = cur.fetchall() if cur.description else []
        finally:
            conn.close()
        return [dict(r) for r in rows]

    def redis(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=int(self.env["REDIS_PORT"]), password=self.env["REDIS_PASSWORD"])

    def live_workers(self) -> set[str]:
        """Containers (hostnames) whose worker keeps a live heartbeat; an incarnation in Redis is
        NODE@HOSTNAME/PID/RANDOM (cvunet_matting.recovery.liveness)."""
        keys = self.redis().scan_iter("cvunet:beat:*")
        return {k.decode()[len("cvunet:beat:") :].split("/")[0].split("@")[-1] for k in keys}

    def run_workers(self, count: int, **env: str) -> None:
        """Exactly `count` workers up, each with a heartbeat, recreated when `env` changes their settings."""
        self.overrides.update(env)
        self.compose("up", "-d", "--no-deps", *WORKERS[:count], timeout=600)
        if count < len(WORKERS):
            self.compose("stop", "-t", "30", *WORKERS[count:])
        wait_until(
            lambda: (
                self.live_workers() == set(WORKERS[:count])
                and all(self.health(s) == "healthy" for s in WORKERS[:count])
            ),
            180,
            interval=1,
            message=f"{count} workers up",
        )


def multipart_many(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def stack(request) -> Stack:
    env_file = os.environ.get("COMPOSE_TEST_ENV")
    if not env_file:
        if "compose" in (request.config.getoption("markexpr") or ""):
            pytest.fail("COMPOSE_TEST_ENV is not set: run `make compose-test`, which builds and starts the stack")
        pytest.skip("the compose stack runs under `make compose-test` only")
    stack = Stack(Path(env_file))
    stack.run_workers(len(WORKERS))
    services = ["traefik", "web1", "web2", "flower", "redis", "postgres", "prometheus", *WORKERS]
    wait_until(
        lambda: all(stack.health(s) == "healthy" for s in services),
        240,
        interval=2,
        message="every service healthy: " + ", ".join(f"{s}={stack.health(s)}" for s in services),
    )
    yield stack
    state = Path(os.environ.get("COMPOSE_TEST_STATE", REPO / "var" / "compose-test"))
    state.mkdir(parents=True, exist_ok=True)
    (state / "figures.json").write_text(json.dumps(FIGURES, indent=2, default=str) + "\n")


def record(name: str, value) -> None:
    FIGURES[name] = value
    print(f"FIGURE {name}: {value}")


def batch_done(stack: Stack, batch_id: str, timeout: float) -> dict:
    def done():
        rows = stack.sql("SELECT * FROM batches WHERE id = %s", batch_id)
        return rows and rows[0]["state"] == "done" and rows[0]

    return wait_until(done, timeout, interval=0.5, message=f"batch {batch_id} done")


def audit(stack: Stack, batch_id: str, count: int) -> list[dict]:
    """Each input of the batch finished once: one success row, one result, one output file."""
    rows = stack.sql("SELECT * FROM tasks WHERE batch_id = %s ORDER BY position", batch_id)
    assert [r["state"] for r in rows] == ["success"] * count, [(r["filename"], r["state"], r["error"]) for r in rows]
    ids = [str(r["id"]) for r in rows]
    results = stack.sql("SELECT task_id FROM results WHERE task_id::text = ANY(%s)", ids)
    assert len(results) == count
    out_dir = os.path.dirname(rows[0]["output_path"])
    listing = stack.exec("web1", "ls", "-1", f"/data/{out_dir}").split()
    produced = sorted(n for n in listing if n.endswith(".png"))
    assert produced == sorted(os.path.basename(r["output_path"]) for r in rows), listing
    return rows


# --- end to end with the real model -------------------------------------------------------------


def test_plain_http_redirects_to_https(stack):
    req = urllib.request.Request(f"http://{stack.host}:{stack.env['HTTP_PORT']}/healthz", method="GET")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(NoRedirect).open(req, timeout=10)
    assert answer.value.code in {301, 308}
    assert answer.value.headers["Location"].startswith("https://")


def test_readyz_sees_redis_postgres_and_workers(stack):
    status, raw, _ = stack.request("GET", "/readyz", auth=False)
    assert status == 200, raw
    body = json.loads(raw)
    assert body["checks"] == {"redis": True, "postgres": True, "workers": True}


def test_upload_to_cutout(stack):
    status, task = stack.upload("photo.png", png_bytes(SEED + 1, (96, 128)))
    assert status == 202, task

    def finished():
        code, raw, _ = stack.request("GET", f"/api/v1/tasks/{task['task_id']}")
        return code == 200 and json.loads(raw)["state"] in {"success", "failure"} and json.loads(raw)

    state = wait_until(finished, 180, interval=1, message="the upload's task finished")
    assert state["state"] == "success", state
    status, png, _ = stack.request("GET", f"/api/v1/tasks/{task['task_id']}/result")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (96, 128, 4)  # full size, with an alpha channel


def test_a_large_body_refused_unread_gets_its_answer_through_traefik(stack):
    """A 4 MiB upload the app refuses before reading it (a wrong key: 401) gets that 401 every time.
    gunicorn discarded 64 KiB of such a body and closed the connection; Traefik, still sending it, met
    a reset and answered 502 to 7 of 40 on this stack (before webapp/unread_bodies.py)."""
    import http.client

    statuses = []
    for _ in range(20):
        conn = http.client.HTTPSConnection(stack.host, int(stack.env["HTTPS_PORT"]), timeout=60, context=stack.tls)
        try:
            headers = {"Content-Type": "application/octet-stream", "Authorization": "Bearer not-a-key"}
            conn.request("POST", "/api/v1/images", body=b"x" * (4 * 2**20), headers=headers)
            statuses.append(conn.getresponse().status)
        finally:
            conn.close()
        time.sleep(0.2)  # well under the API rate limit (10/s)
    assert statuses == [401] * 20


def test_batch_to_zip(stack):
    files = [(f"b{i}.png", png_bytes(SEED + 10 + i, (64, 64))) for i in range(3)]
    batch_id = stack.submit_batch(files)
    batch_done(stack, batch_id, 240)
    status, raw, _ = stack.request("GET", f"/api/v1/batches/{batch_id}/zip")
    assert status == 200, raw[:300]
    names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
    assert sorted(n for n in names if n.endswith(".png")) == ["b0.png", "b1.png", "b2.png"], names


def sign_in(stack: Stack, name: str, password: str) -> dict:
    """Sign in through the login form over HTTPS; the Cookie header of the signed-in session."""
    import re
    from urllib.parse import urlencode

    status, body, headers = stack.request("GET", "/login", auth=False)
    assert status == 200, status
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', body.decode()).group(1)
    form = urlencode({"csrf_token": csrf, "name": name, "password": password}).encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(
        stack.base + "/login",
        data=form,
        method="POST",
        headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=stack.tls))
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(req, timeout=30)
    assert answer.value.code == 302, answer.value.code
    return {"Cookie": answer.value.headers["Set-Cookie"].split(";", 1)[0]}


def test_flower_needs_a_signed_in_admin_and_its_password(stack):
    """Traefik asks the app whether the session is an admin's, then checks Flower's password."""
    flower_pw = f"{stack.env['FLOWER_USER']}:{stack.env['FLOWER_PASSWORD']}"
    flower = {"Authorization": "Basic " + base64.b64encode(flower_pw.encode()).decode()}
    assert stack.request("GET", "/flower/", auth=False)[0] == 401
    assert stack.request("GET", "/flower/", headers=flower)[0] == 401  # the password alone
    name, password = f"ci-admin-{SEED}", secrets.token_urlsafe(16)
    added = stack.compose(
        "exec",
        "-T",
        "web1",
        "cvunet-matting",
        "user",
        "add",
        name,
        "--admin",
        "--password-stdin",
        input_text=password + "\n",
    )
    assert added.returncode == 0, added.stderr
    admin = sign_in(stack, name, password)
    assert stack.request("GET", "/flower/", headers=admin, auth=False)[0] == 401  # a session alone
    status, raw, _ = stack.request("GET", "/flower/api/workers?refresh=1", headers={**admin, **flower}, auth=False)
    assert status == 200, (status, raw[:300])
    assert {name.split("@")[1] for name in json.loads(raw)} >= set(WORKERS)

    # The admin check goes through Traefik's own auth entrypoint to the app service: web1 stopped,
    # web2 answers it (issue 26: it asked web1 only).
    stack.compose("stop", "-t", "10", "web1")
    try:
        statuses = [
            stack.request("GET", "/flower/api/workers", headers={**admin, **flower}, auth=False)[0] for _ in range(6)
        ]
    finally:
        stack.compose("start", "web1")
    assert statuses == [200] * 6
    wait_until(lambda: stack.health("web1") == "healthy", 120, interval=1, message="web1 back")


# --- the client's address, the first admin, worker metrics ---------------------------------------


class SourceClient:
    """HTTPS to Traefik from one of the host's own addresses (the connection's source), keeping the
    session cookie it is given."""

    def __init__(self, stack: Stack, address: str):
        self.stack, self.address, self.cookie = stack, address, ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        import http.client

        conn = http.client.HTTPSConnection(
            self.stack.host,
            int(self.stack.env["HTTPS_PORT"]),
            timeout=60,
            context=self.stack.tls,
            source_address=(self.address, 0),
        )
        try:
            headers = {**(headers or {}), **({"Cookie": self.cookie} if self.cookie else {})}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.getheader("Set-Cookie"):
                self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
            return response.status, data
        finally:
            conn.close()

    def wrong_password(self, name: str) -> int:
        """One sign-in through the login form with a wrong password; the status it got."""
        import re
        from urllib.parse import urlencode

        status, page = self.request("GET", "/login")
        assert status == 200, status
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.decode()).group(1)
        form = urlencode({"csrf_token": csrf, "name": name, "password": "not-the-password"}).encode()
        return self.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})[0]


def app_recorded_addresses(stack: Stack) -> set[str]:
    """Every client address the app keeps per-address state for in Redis (the sign-in limits: keys
    and hash fields). The sign-in limits count wrong passwords per address under
    `...address:<address>` (IPv6 as its /64): a key's last part."""
    import ipaddress

    found = set()
    client = stack.redis()
    for key in client.scan_iter(count=1000):
        words = [key.decode(errors="replace")]
        if client.type(key) == b"hash":
            words += [field.decode(errors="replace") for field in client.hkeys(key)]
        for word in words:  # an address alone, or a key's last part (`prefix:10.204.0.2`)
            for part in {word, word.rsplit(":", 1)[-1]}:
                with contextlib.suppress(ValueError):
                    found.add(str(ipaddress.ip_address(part)))
    return found


def traefik_client_hosts(stack: Stack) -> set[str]:
    """The client addresses in Traefik's access log (Common Log Format: the first field)."""
    logs = subprocess.run(["docker", "logs", stack.container("traefik")], capture_output=True, text=True, timeout=60)
    return {line.split(" ", 1)[0] for line in (logs.stdout + logs.stderr).splitlines() if line[:1].isdigit()}


def test_two_clients_are_two_addresses_to_traefiks_rate_limit_and_to_the_app(stack):
    """Issue 26, item 4: clients from two host addresses (not loopback, so iptables' DNAT keeps their
    source, as for remote clients) are two buckets of the API rate limit (10/s, burst 20): one flooding
    it is refused while the other, at 10/s, never is; Traefik logs and the app records each address."""
    first, second = stack.env["CI_CLIENT_ADDRESSES"].split(",")
    network = f"{stack.env['COMPOSE_PROJECT_NAME']}_default"
    traefik_ip = stack.inspect("traefik", '{{(index .NetworkSettings.Networks "' + network + '").IPAddress}}')
    assert stack.exec("web1", "printenv", "CVUNET_TRUSTED_PROXIES").strip() == traefik_ip

    flood, steady = SourceClient(stack, first), SourceClient(stack, second)
    path = f"/api/v1/tasks/{uuid.uuid4()}"
    flooded: list[int] = []
    stop = threading.Event()

    def flooder():
        while not stop.is_set():  # until the steady client is done: the bucket stays empty meanwhile
            flooded.append(flood.request("GET", path)[0])

    threads = [threading.Thread(target=flooder) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: flooded.count(429) >= 5, 120, interval=0.1, message="the flooding client refused")
        steady_from, steady_statuses = len(flooded), []
        for _ in range(10):
            steady_statuses.append(steady.request("GET", path)[0])
            time.sleep(0.15)
        refused_meanwhile = flooded[steady_from:].count(429)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    record(
        "client_addresses",
        {"flood_requests": len(flooded), "flood_refused_429": flooded.count(429), "steady": steady_statuses},
    )
    assert 429 not in steady_statuses and refused_meanwhile > 0
    assert {first, second} <= traefik_client_hosts(stack)

    # The app: a wrong password from each is counted against that address, never against Traefik's.
    for client in (flood, steady):
        assert client.wrong_password(f"nobody-{uuid.uuid4().hex[:8]}") in {401, 429}
    recorded = app_recorded_addresses(stack)
    assert {first, second} <= recorded, recorded
    gateway = traefik_ip.rsplit(".", 1)[0] + ".1"
    assert not {traefik_ip, gateway} & recorded, recorded


def test_the_first_admins_password_is_in_a_file_not_in_the_logs(stack):
    """Issue 26, item 6: `migrate` writes it to a 0600 file on its own volume; its log names the file."""
    logs = stack.compose("logs", "--no-color", "migrate").stdout
    assert "/var/lib/cvunet-admin/first-admin" in logs and "password " not in logs.replace("password is in", "")
    read = ["run", "--rm", "--no-deps", "-T", "migrate"]
    mode = stack.compose(*read, "stat", "-c", "%a %u", "/var/lib/cvunet-admin/first-admin").stdout.split()
    assert mode == ["600", "10001"]
    text = stack.compose(*read, "cat", "/var/lib/cvunet-admin/first-admin").stdout
    password = text.split("password: ", 1)[1].split()[0]
    assert password not in logs
    assert "Cookie" in sign_in(stack, "admin", password)  # the file's password is the admin's
    # Only migrate mounts it: the web instances (which serve files from /data) cannot reach it.
    for service in ("web1", "web2", "flower"):
        assert "cvunet-admin" not in stack.inspect(service, "{{json .Mounts}}"), service


def test_worker_metrics_stay_on_the_compose_network(stack):
    """Issue 26, item 6: /metrics of a worker has no credential: listening inside its container only
    (the compose network: Prometheus scrapes it, see the test above), never published on the host."""
    for worker in WORKERS:
        ports = json.loads(stack.inspect(worker, "{{json .NetworkSettings.Ports}}") or "{}")
        assert not any(bindings for bindings in ports.values()), (worker, ports)
        assert stack.exec(worker, "printenv", "CVUNET_METRICS_ADDR").strip() == "0.0.0.0"


def test_metrics_web_workers_and_prometheus(stack):
    assert stack.request("GET", "/metrics", auth=False)[0] in {401, 403}
    status, raw, _ = stack.request("GET", "/metrics")  # an admin's API key
    assert status == 200, raw[:300]
    assert b"cvunet_queue_length" in raw
    for worker in WORKERS:
        text = stack.exec(
            worker,
            "python",
            "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9100/metrics').read().decode())",
        )
        assert "cvunet_worker_tasks_total" in text, worker

    def targets():
        raw = stack.exec("prometheus", "wget", "-qO-", "http://127.0.0.1:9090/api/v1/targets")
        active = json.loads(raw)["data"]["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}

    # Prometheus scrapes with a metrics-only key (compose-test.sh made it as the README says): the same
    # key opens nothing else.
    metrics_key = Path(stack.env["PROMETHEUS_TOKEN_FILE"]).read_text().strip()
    bearer = {"Authorization": f"Bearer {metrics_key}"}
    assert stack.request("GET", "/metrics", headers=bearer, auth=False)[0] == 200
    assert stack.request("GET", "/api/v1/tasks", headers=bearer, auth=False)[0] == 401

    expected = {("web", "web1:8000"), ("web", "web2:8000"), ("node", "node-exporter:9100")}
    expected |= {("workers", f"{w}:9100") for w in WORKERS}
    found = wait_until(
        lambda: (t := targets()) and all(t.get(k) == "up" for k in expected) and t,
        90,
        interval=3,
        message="Prometheus scrapes every web instance, worker and the node exporter",
    )
    assert expected <= set(found)
    rules = json.loads(stack.exec("prometheus", "wget", "-qO-", "http://127.0.0.1:9090/api/v1/rules"))
    loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"WorkerDown", "QueueGrowingWorkersIdle", "DataDiskAlmostFull"} <= loaded


# --- scaling: the same images on 1, 2 and 3 worker nodes ----------------------------------------


def test_throughput_with_one_two_and_three_workers(stack):
    """Images per second of the whole path (submit to batch done) on 1, 2 and 3 worker nodes, each
    image holding its node HOLD_S seconds on the tiny model, as a device would (a sleep: no CPU), so
    that this 2-core host measures what adding nodes gives a device-bound cluster; real ISNet on CPU
    workers measures only how the host's two cores are shared (RELIABILITY.md). Efficiency of n
    nodes = throughput(n) / (n * throughput(1)). Images differ per run (identical requests would
    reuse results) but have the same size. The last run leaves the three nodes the failover tests use."""
    count = int(os.environ.get("COMPOSE_SCALING_IMAGES", "6"))
    cores = os.cpu_count()
    figures = {}
    for nodes in (1, 2, 3):
        stack.run_workers(nodes, CI_WORKER_MODEL=TINY_MODEL, CI_TEST_DELAY_S=str(HOLD_S))
        files = [(f"s{nodes}_{i}.png", png_bytes(SEED + 1000 * nodes + i, (256, 256))) for i in range(count)]
        batch_id = stack.submit_batch(files)
        batch = batch_done(stack, batch_id, 900)
        rows = stack.sql(
            "SELECT min(started_at) AS first, max(finished_at) AS last, count(DISTINCT worker) AS nodes "
            "FROM tasks WHERE batch_id = %s",
            batch_id,
        )[0]
        span = (batch["finished_at"] - batch["created_at"]).total_seconds()
        figures[nodes] = {"seconds": round(span, 2), "per_s": round(count / span, 3), "nodes_used": rows["nodes"]}
    one = figures[1]["per_s"]
    for nodes in (2, 3):
        figures[nodes]["efficiency"] = round(figures[nodes]["per_s"] / (nodes * one), 2)
    record("scaling", {"images": count, "host_cores": cores, "device_s_per_image": HOLD_S, "runs": figures})
    assert figures[2]["nodes_used"] == 2 and figures[3]["nodes_used"] == 3  # efficiency: printed, not asserted


# --- node failures with the tiny model, production time limits and heartbeat -------------------


@pytest.fixture(scope="module")
def tiny(stack):
    """Three workers on the tests' tiny model, each image held HOLD_S seconds: failures hit mid-image."""
    stack.run_workers(3, CI_WORKER_MODEL=TINY_MODEL, CI_TEST_DELAY_S=str(HOLD_S))
    return stack


def held_by(stack: Stack, batch_id: str, worker: str, timeout: float = 60) -> dict:
    def holding():
        rows = stack.sql(
            "SELECT * FROM tasks WHERE batch_id = %s AND state = 'started' AND worker LIKE %s", batch_id, f"%@{worker}"
        )
        return rows and rows[0]

    return wait_until(holding, timeout, interval=0.1, message=f"{worker} holds an image")


def running_again(stack: Stack, task_id: str, since: float, timeout: float) -> dict:
    """The task's row once it started again after `since` (on another node, or on the node's own
    restarted container: a new incarnation either way); `after_s` says how long that took."""

    def restarted():
        (row,) = stack.sql("SELECT * FROM tasks WHERE id = %s", task_id)
        return row["started_at"] and row["started_at"].timestamp() > since and row

    row = wait_until(restarted, timeout, interval=0.1, message=f"task {task_id} running again")
    return {**row, "after_s": row["started_at"].timestamp() - since}


def test_a_crashed_worker_containers_image_runs_again_elsewhere(tiny):
    stack = tiny
    files = [(f"k{i}.png", png_bytes(SEED + 2000 + i, (64, 64))) for i in range(9)]
    batch_id = stack.submit_batch(files)
    victim = held_by(stack, batch_id, "worker-cpu0")
    killed_at = stack.crash("worker-cpu0")
    again = running_again(stack, str(victim["id"]), killed_at, 60)
    batch_done(stack, batch_id, 120)
    rows = audit(stack, batch_id, len(files))
    (row,) = [r for r in rows if r["id"] == victim["id"]]
    back = wait_until(lambda: stack.health("worker-cpu0") == "healthy", 120, interval=0.5, message="restarted")
    healthy_after = time.time() - killed_at
    record(
        "failover_worker_crash",
        {
            "image_running_again_s": round(again["after_s"], 2),
            "rerun_on": again["worker"],
            "attempts": row["attempts"],
            "lost": 0,
            "duplicated": 0,
            "container_restarted_and_healthy_s": round(healthy_after, 1) if back else None,
        },
    )
    assert again["after_s"] < FAILOVER_BOUND_S


def test_a_worker_cut_off_for_a_minute_leaves_no_duplicate_and_no_stuck_row(tiny):
    stack = tiny
    network = f"{stack.env['COMPOSE_PROJECT_NAME']}_default"
    container = stack.container("worker-cpu1")
    files = [(f"n{i}.png", png_bytes(SEED + 3000 + i, (64, 64))) for i in range(9)]
    batch_id = stack.submit_batch(files)
    victim = held_by(stack, batch_id, "worker-cpu1")
    subprocess.run(["docker", "network", "disconnect", network, container], check=True, timeout=30)
    cut_at = time.time()
    try:
        again = running_again(stack, str(victim["id"]), cut_at, 60)
        assert not again["worker"].endswith("@worker-cpu1")  # it is cut off: redone elsewhere
        batch_done(stack, batch_id, 120)
        time.sleep(max(0.0, 60 - (time.time() - cut_at)))
    finally:
        subprocess.run(
            ["docker", "network", "connect", "--alias", "worker-cpu1", network, container], check=True, timeout=30
        )
    # Back on the network it finishes its old image: the first result won, so nothing changes.
    wait_until(lambda: "worker-cpu1" in stack.live_workers(), 120, message="worker-cpu1 beats again")
    time.sleep(2 * HOLD_S + 5)
    rows = audit(stack, batch_id, len(files))
    stuck = stack.sql("SELECT id FROM tasks WHERE state NOT IN ('success', 'failure')")
    unacked = stack.redis().hlen("unacked")
    record(
        "failover_network_cut_60s",
        {
            "image_running_again_s": round(again["after_s"], 2),
            "rerun_on": again["worker"],
            "rows": len(rows),
            "stuck_rows": len(stuck),
            "unacked_messages_after": unacked,
            "lost": 0,
            "duplicated": 0,
        },
    )
    assert again["after_s"] < FAILOVER_BOUND_S
    assert not stuck and unacked == 0


def traefik_log_after(container: str, server: str, since: float) -> tuple[float | None, float | None]:
    """From Traefik's log since `since`: seconds to its first failed health check of `server`, and
    to the last request its access log shows sent to `server`."""
    from datetime import datetime

    stamp = datetime.fromtimestamp(since).astimezone().isoformat()
    logs = subprocess.run(
        ["docker", "logs", "-t", "--since", stamp, container], capture_output=True, text=True, timeout=60
    )
    failed = routed = None
    for line in (logs.stdout + logs.stderr).splitlines():
        at = datetime.fromisoformat(line.split()[0][:26] + "+00:00").timestamp() - since
        if "Health check failed" in line and f"//{server}:" in line and failed is None:
            failed = at
        if f'"http://{server}:8000"' in line:
            routed = at
    return failed, routed


def test_a_crashed_web_container_is_taken_out_and_uploads_are_done_or_refused(tiny):
    """Uploads at ~3/s (under the API rate limit; each holds a worker 4 s) while web1 is SIGKILLed:
    every answered 202 finishes, every other answer was either not stored or finished too, and
    Traefik's health check takes web1 out."""
    stack = tiny
    results: list[tuple[float, float, str, int, dict]] = []
    stop = threading.Event()

    def client(offset: int):
        i = offset
        while not stop.is_set():
            name = f"w{uuid.uuid4().hex[:12]}.png"
            sent = time.time()
            status, body = stack.upload(name, png_bytes(SEED + 5000 + i, (32, 32)))
            results.append((sent, time.time(), name, status, body))
            i += 2
            time.sleep(0.6)

    web1 = stack.container("web1")
    traefik = stack.container("traefik")
    # Kept down (no restart) long enough for Traefik's health check to notice; put back afterwards.
    subprocess.run(["docker", "update", "--restart=no", web1], check=True, capture_output=True, timeout=30)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        killed_at = stack.crash("web1")
        time.sleep(15)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        subprocess.run(["docker", "update", "--restart=unless-stopped", web1], capture_output=True, timeout=30)
        subprocess.run(["docker", "start", web1], capture_output=True, timeout=60)
    down_after, last_routed = traefik_log_after(traefik, "web1", killed_at)

    failed = [r for r in results if r[3] != 202]
    after = [r for r in failed if r[0] >= killed_at - 1]
    last_failure = max((r[1] - killed_at for r in after), default=0.0)
    accepted = [r for r in results if r[3] == 202]
    names = [r[2] for r in failed]
    stored = stack.sql("SELECT filename FROM tasks WHERE filename = ANY(%s)", names) if names else []
    ids = [r[4]["task_id"] for r in accepted]

    def all_final():
        rows = stack.sql("SELECT state FROM tasks WHERE id::text = ANY(%s)", ids)
        return len(rows) == len(ids) and all(r["state"] == "success" for r in rows)

    wait_until(all_final, 180, interval=1, message="every accepted upload finished")
    # A request whose answer was lost with web1 may still have been stored: then it must finish too.
    lost_answers = [r["filename"] for r in stored]
    if lost_answers:
        wait_until(
            lambda: all(
                r["state"] == "success"
                for r in stack.sql("SELECT state FROM tasks WHERE filename = ANY(%s)", lost_answers)
            ),
            180,
            interval=1,
            message="stored uploads whose answer was lost finished",
        )
    record(
        "failover_web_crash",
        {
            "uploads": len(results),
            "accepted_and_finished": len(accepted),
            "refused": len(failed),
            "refused_statuses": sorted({r[3] for r in failed}),
            "refused_nothing_stored": len(failed) - len(stored),
            "done_answer_lost": len(stored),
            "last_refusal_after_kill_s": round(last_failure, 2),
            "traefik_marked_it_down_after_s": down_after and round(down_after, 2),
            "last_request_sent_to_it_after_s": last_routed and round(last_routed, 2),
            "traefik_health_interval_s": 5,
        },
    )
    assert last_failure < FAILOVER_BOUND_S
    assert down_after is not None and down_after < FAILOVER_BOUND_S
    wait_until(lambda: stack.health("web1") == "healthy", 120, interval=1, message="web1 back")


# --- Traefik spools no download ------------------------------------------------------------------

# Sizes of the files Traefik holds in its temp dir (/tmp: Go's default, where the buffering middleware
# spools past its in-memory part): those listed there and those held open there, deleted or not.
SPOOLED = r"""
for fd in /proc/[0-9]*/fd/*; do
  target=$(readlink "$fd" 2>/dev/null) || continue
  case "$target" in /tmp/*) echo "$(stat -L -c %s "$fd" 2>/dev/null) $target" ;; esac
done
find /tmp -type f -exec stat -c '%s %n' {} +
"""


def spooled_mib(stack: Stack) -> list[float]:
    lines = stack.exec("traefik", "sh", "-c", SPOOLED).splitlines()
    return [round(int(line.split()[0]) / 2**20, 1) for line in lines if line[:1].isdigit()]


def test_a_large_zip_download_streams_and_traefik_spools_none_of_it(tiny):
    """Issue 26, item 5: a batch ZIP of ~12 MiB (three 1024x1024 noise cut-outs), read slowly: Traefik
    keeps no temp file of it (buffering, on every route before, held whole answers in a temp file past
    1 MiB for as long as the client read). The control: a 4 MiB upload, 3.5 MiB sent, is spooled there
    (then sent whole)."""
    import http.client

    stack = tiny

    def connect():
        port = int(stack.env["HTTPS_PORT"])
        return http.client.HTTPSConnection(stack.host, port, timeout=120, context=stack.tls)

    upload = connect()
    try:
        upload.putrequest("POST", "/api/v1/images")
        upload.putheader("Authorization", f"Bearer {stack.token}")
        upload.putheader("Content-Type", "application/octet-stream")
        upload.putheader("Content-Length", str(4 * 2**20))
        upload.endheaders(b"x" * (7 * 2**19))  # 3.5 MiB: 2 MiB in memory, the rest in a temp file
        held = wait_until(
            lambda: [size for size in spooled_mib(stack) if size >= 1] or None,
            30,
            interval=0.5,
            message="the half-sent upload spooled in Traefik's /tmp",
        )
        # The rest, so that the request ends as uploads do (the app refuses the bytes: 400)
        # and Traefik removes its temp file. An upload cut off instead left its file behind for more
        # than 120 s in one CI run of three, where the check below took it for the download's.
        upload.send(b"x" * (2**19))
        assert upload.getresponse().status == 400
    finally:
        upload.close()
    wait_until(
        lambda: not [size for size in spooled_mib(stack) if size >= 1],
        60,
        interval=0.5,
        message="Traefik removed the finished upload's temp file",
    )

    files = [(f"z{i}.png", png_bytes(SEED + 7000 + i, (1024, 1024))) for i in range(3)]
    batch_id = stack.submit_batch(files)
    batch_done(stack, batch_id, 300)
    download = connect()
    try:
        download.request("GET", f"/api/v1/batches/{batch_id}/zip", headers={"Authorization": f"Bearer {stack.token}"})
        response = download.getresponse()
        assert response.status == 200
        head = response.read(64 * 1024)
        time.sleep(1)  # a slow reader: whatever Traefik would spool, it has had time to
        while_reading = spooled_mib(stack)
        body = head + response.read()
    finally:
        download.close()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    record(
        "download_spooling",
        {"zip_mib": round(len(body) / 2**20, 1), "spooled_mib_while_read": while_reading, "upload_control": held},
    )
    assert sorted(n for n in names if n.endswith(".png")) == ["z0.png", "z1.png", "z2.png"]
    assert len(body) > 8 * 2**20
    assert [size for size in while_reading if size >= 1] == []
