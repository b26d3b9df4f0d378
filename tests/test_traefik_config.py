"""Traefik configs: structure of the production files, and the local stack run by the real binary."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest
import yaml

from tests.support import REPO, free_port, require_tool, wait_until

TRAEFIK_DIR = REPO / "traefik"
LOCAL_STATIC = TRAEFIK_DIR / "local" / "static.yml.tmpl"
LOCAL_DYNAMIC = TRAEFIK_DIR / "local" / "dynamic.yml.tmpl"
BODY_LIMIT = 64 * 1024 * 1024
FLOWER_USER, FLOWER_PASSWORD = "admin", "test-only-password"

# --- helpers -------------------------------------------------------------------------------------


def render(template: Path, dest: Path, **values: object) -> Path:
    """Fill a $-template; `substitute` raises on a missing value, so typos fail loudly."""
    dest.write_text(Template(template.read_text()).substitute({k: str(v) for k, v in values.items()}))
    return dest


def web_servers(ports: list[int]) -> str:
    """The ${WEB_SERVERS} value: a YAML flow list, valid at any indentation."""
    return json.dumps([{"url": f"http://127.0.0.1:{port}"} for port in ports])


def write_htpasswd(path: Path, user: str, password: str) -> Path:
    # {SHA} is weak but needs no bcrypt module; fine for a throwaway test password.
    digest = hashlib.sha1(password.encode(), usedforsecurity=False).digest()
    path.write_text(f"{user}:{{SHA}}{base64.b64encode(digest).decode()}\n")
    return path


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def fetch(url: str, headers: dict[str, str] | None = None, context=None) -> tuple[int, str, dict]:
    """GET `url`; HTTP errors are answers too, so return them instead of raising."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace"), dict(err.headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, "", {}


def post_status(url: str, content_length: int, sent: bytes) -> int:
    """Announce `content_length` bytes but send only `sent`, so a refused body costs nothing."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Length", str(content_length))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders(sent)
        return conn.getresponse().status
    finally:
        conn.close()


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Processes:
    """Children started by one test; each in its own session so a group kill reaches them all."""

    log_dir: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        # The child keeps its own copy of the log's descriptor; ours can close at once.
        with open(self.log_dir / f"{name}.out", "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ | (env or {})
            )
        self.running[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        # Newest first: Traefik goes before its backends, so it logs no failed health checks.
        for name in reversed(list(self.running)):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.out").read_text(errors="replace")


@pytest.fixture
def processes(tmp_path):
    procs = Processes(log_dir=tmp_path)
    yield procs
    procs.stop_all()


# http.server's file server, whose POST reads the whole body before its 501: answering first and
# closing with the body unread resets Traefik's connection while it still sends, and Traefik then
# answers 502 instead of the 501 (seen under load).
BACKEND = """
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_error(501)
port, root = int(sys.argv[1]), sys.argv[2]
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=root))
server.serve_forever()
"""


def start_backend(procs: Processes, root: Path, name: str, port: int, files: dict[str, str]) -> None:
    """A file server on 127.0.0.1 whose files say which instance answered (POST: 501 once read)."""
    docroot = root / name
    for rel, text in files.items():
        (docroot / rel).parent.mkdir(parents=True, exist_ok=True)
        (docroot / rel).write_text(text)
    argv = [sys.executable, "-c", BACKEND, str(port), str(docroot)]
    procs.start(name, argv)
    wait_until(
        lambda: fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200,
        10,
        interval=0.1,
        message=f"waiting for {name} to listen",
    )


def start_traefik(procs: Processes, static: Path, ping_url: str, temp_dir: Path | None = None) -> None:
    """Traefik on `static`; `temp_dir` is its TMPDIR, where the buffering middleware spools bodies."""
    env = {"TMPDIR": str(temp_dir)} if temp_dir else None
    procs.start("traefik", [require_tool("traefik"), f"--configFile={static}"], env)

    def pinged() -> bool:
        if procs.running["traefik"].poll() is not None:
            raise AssertionError("traefik exited:\n" + procs.log("traefik"))
        return fetch(ping_url)[0] == 200

    wait_until(pinged, 15, interval=0.1, message="waiting for traefik /ping")


# --- the local stack -----------------------------------------------------------------------------


@dataclass
class LocalStack:
    url: str
    web_ports: dict[str, int]
    procs: Processes
    root: Path
    temp_dir: Path  # Traefik's TMPDIR

    def whoami(self) -> tuple[int, str]:
        status, body, _ = fetch(f"{self.url}/whoami")
        return status, body.strip()

    def start_web(self, name: str) -> None:
        start_backend(self.procs, self.root, name, self.web_ports[name], web_files(name))


def web_files(name: str) -> dict[str, str]:
    # auth/admin: the app's admin check that Flower's forwardAuth asks (a stand-in that says yes).
    return {"healthz": "ok\n", "whoami": f"{name}\n", "auth/admin": "admin\n"}


@pytest.fixture
def local_stack(tmp_path, processes) -> LocalStack:
    """Two web stand-ins and a Flower stand-in behind Traefik, all on 127.0.0.1."""
    ports = {"web-a": free_port(), "web-b": free_port(), "flower": free_port()}
    http_port, ping_port = free_port(), free_port()
    dynamic_dir = tmp_path / "dynamic"
    dynamic_dir.mkdir()
    web_ports = {name: ports[name] for name in ("web-a", "web-b")}
    temp_dir = tmp_path / "traefik-tmp"
    temp_dir.mkdir()
    stack = LocalStack(f"http://127.0.0.1:{http_port}", web_ports, processes, tmp_path, temp_dir)
    for name in stack.web_ports:
        stack.start_web(name)
    flower_files = {"healthz": "ok\n", "flower/index.html": "flower dashboard\n"}
    start_backend(processes, tmp_path, "flower", ports["flower"], flower_files)
    render(
        LOCAL_DYNAMIC,
        dynamic_dir / "stack.yml",
        WEB_SERVERS=web_servers(list(stack.web_ports.values())),
        FLOWER_PORT=ports["flower"],
        HTPASSWD_FILE=write_htpasswd(tmp_path / "htpasswd", FLOWER_USER, FLOWER_PASSWORD),
        HTTP_PORT=http_port,
    )
    static = render(
        LOCAL_STATIC,
        tmp_path / "traefik.yml",
        HTTP_PORT=http_port,
        PING_PORT=ping_port,
        DYNAMIC_DIR=dynamic_dir,
        LOG_DIR=tmp_path,
    )
    start_traefik(processes, static, f"http://127.0.0.1:{ping_port}/ping", temp_dir)
    # /ping answers before the file provider's routes are live.
    wait_until(lambda: stack.whoami()[0] == 200, 15, interval=0.1, message="waiting for the app route")
    return stack


@pytest.mark.stack
def test_requests_are_balanced_across_web_servers(local_stack):
    answers = Counter(local_stack.whoami() for _ in range(20))
    assert set(answers) == {(200, "web-a"), (200, "web-b")}
    # Weighted round robin with equal weights alternates; allow slack for a health-check race.
    assert min(answers.values()) >= 5


@pytest.mark.stack
def test_dead_server_is_taken_out_and_comes_back(local_stack):
    local_stack.procs.stop("web-a")

    def only_b_answers() -> bool:
        return all(local_stack.whoami() == (200, "web-b") for _ in range(6))

    # Interval 1s + timeout 0.8s: within a few seconds no request may reach the dead server.
    wait_until(only_b_answers, 8, interval=0.1, message="waiting for the health check to mark web-a down")
    answers = [local_stack.whoami() for _ in range(30)]
    assert answers == [(200, "web-b")] * 30

    local_stack.start_web("web-a")
    wait_until(
        lambda: any(local_stack.whoami() == (200, "web-a") for _ in range(4)),
        8,
        interval=0.1,
        message="waiting for web-a back",
    )


@pytest.mark.stack
def test_flower_needs_basic_auth(local_stack):
    url = f"{local_stack.url}/flower/"
    status, _, headers = fetch(url)
    assert status == 401
    assert "cvunet-admin" in headers.get("Www-Authenticate", "")
    assert fetch(url, basic_auth(FLOWER_USER, "wrong"))[0] == 401
    status, body, _ = fetch(url, basic_auth(FLOWER_USER, FLOWER_PASSWORD))
    assert (status, body.strip()) == (200, "flower dashboard")


@pytest.mark.stack
def test_flowers_admin_check_outlives_a_dead_web_server(local_stack):
    """The admin check goes through Traefik's own app service: with web-a gone, web-b answers it."""
    local_stack.procs.stop("web-a")
    status, body, _ = fetch(f"{local_stack.url}/flower/", basic_auth(FLOWER_USER, FLOWER_PASSWORD))
    assert (status, body.strip()) == (200, "flower dashboard")
    log = (local_stack.root / "access.log").read_text()
    assert "GET /auth/admin" in log  # asked through Traefik, not past it


@pytest.mark.stack
def test_body_over_the_limit_is_refused_by_traefik(local_stack):
    # The stand-in answers POST 501 once it has the body: 501 proves a small body went through.
    assert post_status(local_stack.url, 1024, b"x" * 1024) == 501
    assert post_status(local_stack.url, BODY_LIMIT + 1, b"x" * 1024) == 413


def spooled(temp_dir: Path, pid: int) -> list[int]:
    """Sizes of the files Traefik (process `pid`) holds in its temp dir: those listed there, and those
    it holds open there, deleted or not."""
    sizes = [f.stat().st_size for f in temp_dir.rglob("*") if f.is_file()]
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(fd).startswith(str(temp_dir)):
                sizes.append(fd.stat().st_size)
    return sizes


def connect(base_url: str, context=None) -> http.client.HTTPConnection:
    scheme, _, address = base_url.partition("://")
    host, port = address.split(":")
    if scheme == "https":
        return http.client.HTTPSConnection(host, int(port), timeout=20, context=context)
    return http.client.HTTPConnection(host, int(port), timeout=20)


def start_download(
    base_url: str, path: str, first: int, context=None
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET `path` and read only its first `first` bytes: the rest stays in flight."""
    conn = connect(base_url, context)
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200, response.status
    assert len(response.read(first)) == first
    return conn, response


BIG = 24 * 1024 * 1024  # a download well past what buffering keeps in memory (1 MiB)


@pytest.mark.stack
def test_downloads_stream_through_traefik_without_a_temp_file(local_stack):
    """A GET's answer goes to the client as the app sends it: Traefik spools none of it to disk, where
    a buffered 24 MiB answer would have become a 23 MiB temp file for as long as the client reads."""
    for name in local_stack.web_ports:
        (local_stack.root / name / "big.zip").write_bytes(os.urandom(BIG))
    traefik = local_stack.procs.running["traefik"].pid
    conn, response = start_download(local_stack.url, "/big.zip", 64 * 1024)
    try:
        assert [size for size in spooled(local_stack.temp_dir, traefik) if size >= 1024 * 1024] == []
        assert len(response.read()) == BIG - 64 * 1024
    finally:
        conn.close()


@pytest.mark.stack
def test_uploads_are_still_buffered_before_the_app_sees_them(local_stack):
    """The other half (and the check that `spooled` sees Traefik's temp files): a 4 MiB upload, 3 MiB of
    it sent, is held in Traefik's temp dir; the backend gets it only once whole (http.server: 501)."""
    traefik = local_stack.procs.running["traefik"].pid
    conn = connect(local_stack.url)
    try:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Length", str(4 * 1024 * 1024))
        conn.endheaders(b"x" * (3 * 1024 * 1024))
        wait_until(
            lambda: any(size >= 512 * 1024 for size in spooled(local_stack.temp_dir, traefik)),
            10,
            interval=0.1,
            message="the upload's body spooled to Traefik's temp dir",
        )
        conn.send(b"x" * (1024 * 1024))
        assert conn.getresponse().status == 501
    finally:
        conn.close()


# --- production files --------------------------------------------------------------------------


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_production_static_config_structure():
    static = load_yaml(TRAEFIK_DIR / "traefik.yml")
    entry = static["entryPoints"]
    assert entry["web"]["address"] == ":80"
    assert entry["websecure"]["address"] == ":443"
    redirect = entry["web"]["http"]["redirections"]["entryPoint"]
    assert (redirect["to"], redirect["scheme"]) == ("websecure", "https")
    # The ping entrypoint must exist and must not be one the internet reaches.
    assert static["ping"]["entryPoint"] in entry
    assert static["ping"]["entryPoint"] not in {"web", "websecure"}
    assert static["providers"]["file"]["directory"] == "/etc/traefik/dynamic"
    assert "accessLog" in static
    # Flower's admin check comes in on loopback only; only there are forwarded headers trusted.
    auth = entry["auth"]
    assert auth["address"].startswith("127.0.0.1:") and auth["forwardedHeaders"]["trustedIPs"] == ["127.0.0.1/32"]
    for name in ("web", "websecure"):
        assert "forwardedHeaders" not in entry[name] and "proxyProtocol" not in entry[name], name


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration  # the configs say their timeouts in seconds
    return float(duration[:-1])


def gunicorn_keepalive(scratch: Path) -> float:
    """Read in a child: importing the config module sets PROMETHEUS_MULTIPROC_DIR for the whole process
    (named here, so it makes no folder of its own)."""
    probe = "import cvunet_matting.webapp.gunicorn_conf as c; print(c.keepalive)"
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(scratch)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout)


def test_gunicorn_keeps_idle_connections_longer_than_traefik(tmp_path):
    """Traefik must close an idle connection to a web server before gunicorn does: the other way round, a
    request sent down a connection gunicorn is just closing is a 502 (a POST is not retried; CI met one
    with gunicorn's default 2 s). Every static config (compose, the local stack, Kubernetes) says Traefik's."""
    keepalive = gunicorn_keepalive(tmp_path)
    k8s_config = next(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "base" / "traefik.yaml").read_text()))
    statics = [
        load_yaml(TRAEFIK_DIR / "traefik.yml"),
        load_yaml(LOCAL_STATIC),
        yaml.safe_load(k8s_config["data"]["traefik.yml"]),
    ]
    for static in statics:
        idle = seconds(static["serversTransport"]["forwardingTimeouts"]["idleConnTimeout"])
        assert 0 < idle < keepalive - 10, (idle, keepalive)


def test_production_dynamic_config_structure():
    http_cfg = load_yaml(TRAEFIK_DIR / "dynamic" / "stack.yml")["http"]
    routers, services, middlewares = http_cfg["routers"], http_cfg["services"], http_cfg["middlewares"]
    for router in routers.values():
        assert router["service"] in services
        assert set(router.get("middlewares", [])) <= set(middlewares)

    app = services["app"]["loadBalancer"]
    assert len(app["servers"]) >= 2
    assert app["healthCheck"]["path"] == "/healthz"

    flower_mw = [next(iter(middlewares[name])) for name in routers["flower"]["middlewares"]]
    # /flower gets its slash; then the network, then an app admin, then Flower's own password.
    assert flower_mw == ["redirectRegex", "ipAllowList", "forwardAuth", "basicAuth"]
    check = middlewares["admin-session"]["forwardAuth"]
    # Asked through Traefik's own loopback `auth` entrypoint, whose router sends it to the
    # health-checked app service (both web instances): not to one web instance.
    assert check["address"] == "http://127.0.0.1:8083/auth/admin" and check["trustForwardHeader"] is False
    admin_check = routers["admin-check"]
    assert admin_check["entryPoints"] == ["auth"] and admin_check["service"] == "app"
    assert admin_check["rule"] == "Path(`/auth/admin`)"
    # The compose bridge networks are private ranges too: Flower answered 403 to the right password.
    assert "172.16.0.0/12" in middlewares["admin-allowlist"]["ipAllowList"]["sourceRange"]
    assert routers["flower"]["rule"] == "PathPrefix(`/flower`)"
    assert "ipAllowList" in middlewares[routers["metrics"]["middlewares"][0]]

    for auth in (mw["basicAuth"] for mw in middlewares.values() if "basicAuth" in mw):
        assert "users" not in auth, "basic auth users belong in a usersFile, not in the repo"
        assert auth["usersFile"] == "/etc/traefik/secrets/htpasswd"

    assert middlewares["body-limit"]["buffering"]["maxRequestBodyBytes"] == BODY_LIMIT
    # body-limit's plain-text 413 is replaced by the app's answer: the errors middleware wraps it.
    for name in ("app", "api"):
        assert routers[name]["middlewares"][:2] == ["upload-refused", "body-limit"]
    # Buffering holds whole answers too: never on GET/HEAD (downloads, event streams), and only
    # routers without it may match them.
    for name, router in routers.items():
        buffered = any("buffering" in middlewares[m] for m in router.get("middlewares", []))
        reads_only = "Method(`GET`) || Method(`HEAD`)" in router["rule"]
        assert not (buffered and reads_only), name
    assert routers["app-read"]["rule"] == "Method(`GET`) || Method(`HEAD`)"
    assert (
        routers["api-read"]["rule"]
        == "(PathPrefix(`/api`) || PathPrefix(`/v1.0`)) && (Method(`GET`) || Method(`HEAD`))"
    )
    assert routers["api-read"]["middlewares"][0] == "api-ratelimit"
    # Precedence is explicit, not by rule length (the method rules are longer than /flower's).
    public = [name for name, router in routers.items() if "websecure" in router["entryPoints"]]
    order = sorted(public, key=lambda name: -routers[name]["priority"])
    assert order == ["flower", "metrics", "api-read", "api", "app-read", "app"]
    refused = middlewares["upload-refused"]["errors"]
    assert refused["status"] == ["413"] and refused["service"] == "app" and "{url}" in refused["query"]
    app_rate = middlewares["app-ratelimit"]["rateLimit"]
    api_rate = middlewares["api-ratelimit"]["rateLimit"]
    assert {"app-ratelimit", "retry-idempotent"} <= set(routers["app"]["middlewares"])
    assert middlewares["retry-idempotent"]["retry"]["attempts"] >= 2
    assert api_rate["average"] < app_rate["average"]


def test_local_templates_take_exactly_the_documented_placeholders(tmp_path):
    static_ids = set(Template(LOCAL_STATIC.read_text()).get_identifiers())
    dynamic_ids = set(Template(LOCAL_DYNAMIC.read_text()).get_identifiers())
    assert static_ids == {"HTTP_PORT", "PING_PORT", "DYNAMIC_DIR", "LOG_DIR"}
    assert dynamic_ids == {"WEB_SERVERS", "FLOWER_PORT", "HTPASSWD_FILE", "HTTP_PORT"}

    values = {"WEB_SERVERS": web_servers([1, 2, 3]), "FLOWER_PORT": 5, "HTPASSWD_FILE": "/h", "HTTP_PORT": 7}
    dynamic = load_yaml(render(LOCAL_DYNAMIC, tmp_path / "d.yml", **values))
    servers = dynamic["http"]["services"]["app"]["loadBalancer"]["servers"]
    assert servers == [{"url": f"http://127.0.0.1:{port}"} for port in (1, 2, 3)]
    # Flower's admin check asks the `web` entrypoint, so the app service picks a live web instance.
    assert dynamic["http"]["middlewares"]["admin-session"]["forwardAuth"]["address"] == "http://127.0.0.1:7/auth/admin"
    rate = dynamic["http"]["middlewares"]["app-ratelimit"]["rateLimit"]
    assert (rate["average"], rate["burst"]) == (2000, 4000)


def production_copy(
    tmp_path: Path,
    ports: dict[str, int],
    htpasswd: Path,
    admin_ranges=None,
    app_urls: tuple[str, str] = ("http://127.0.0.1:9", "http://127.0.0.1:9"),
    flower_url: str = "http://127.0.0.1:9",
) -> Path:
    """traefik.yml and dynamic/ with only host-specific values changed, to run them unprivileged: every
    entrypoint on 127.0.0.1 (a free port for each one `ports` leaves out; `ports` gets them all);
    `admin_ranges` replaces the admin allow-list, as an operator edits it for their network, `app_urls`
    web1 and web2, `flower_url` Flower (by default a port where nothing listens)."""
    static = load_yaml(TRAEFIK_DIR / "traefik.yml")
    for name in [*static["entryPoints"], "traefik"]:  # `traefik`: the API's entrypoint
        ports.setdefault(name, free_port())
    for name, port in ports.items():
        static["entryPoints"].setdefault(name, {})["address"] = f"127.0.0.1:{port}"
    static["api"] = {"insecure": True}  # the read-only API on the `traefik` entrypoint
    static["providers"]["file"]["directory"] = str(tmp_path / "dynamic")
    (tmp_path / "dynamic").mkdir()
    for src in (TRAEFIK_DIR / "dynamic").glob("*.yml"):
        text = src.read_text().replace("/etc/traefik/secrets/htpasswd", str(htpasswd))
        # Flower's admin check asks Traefik's own `auth` entrypoint, wherever it now listens.
        text = text.replace("http://127.0.0.1:8083/", f"http://127.0.0.1:{ports['auth']}/")
        text = text.replace("http://web1:8000", app_urls[0]).replace("http://web2:8000", app_urls[1])
        text = text.replace("http://flower:5555", flower_url)
        if admin_ranges is not None and "admin-allowlist" in text:
            dynamic = yaml.safe_load(text)
            dynamic["http"]["middlewares"]["admin-allowlist"]["ipAllowList"]["sourceRange"] = admin_ranges
            text = yaml.safe_dump(dynamic)
        (tmp_path / "dynamic" / src.name).write_text(text)
    dest = tmp_path / "traefik.yml"
    dest.write_text(yaml.safe_dump(static))
    return dest


@pytest.mark.stack
def test_production_config_loads_in_traefik(tmp_path, processes):
    ports = {name: free_port() for name in ("web", "websecure", "ping", "traefik")}
    htpasswd = write_htpasswd(tmp_path / "htpasswd", FLOWER_USER, FLOWER_PASSWORD)
    checker = free_port()  # a stand-in for the web instances, whose admin check says yes
    start_backend(processes, tmp_path, "admin-check", checker, {"healthz": "ok\n", "auth/admin": "yes\n"})
    web = f"http://127.0.0.1:{checker}"
    static = production_copy(tmp_path, ports, htpasswd, app_urls=(web, web))
    start_traefik(processes, static, f"http://127.0.0.1:{ports['ping']}/ping")
    api = f"http://127.0.0.1:{ports['traefik']}/api"
    # compose's healthcheck: `traefik healthcheck` finds the ping entrypoint in the same file.
    healthcheck = [require_tool("traefik"), "healthcheck", f"--configFile={static}"]
    check = subprocess.run(healthcheck, capture_output=True, timeout=10)
    assert check.returncode == 0, check.stdout + check.stderr

    def routers() -> dict[str, dict]:
        status, body, _ = fetch(f"{api}/http/routers")
        return {r["name"]: r for r in json.loads(body)} if status == 200 else {}

    wanted = {f"{name}@file" for name in load_yaml(TRAEFIK_DIR / "dynamic" / "stack.yml")["http"]["routers"]}
    wait_until(lambda: wanted <= set(routers()), 15, interval=0.1, message="waiting for the file provider's routers")
    # A bad middleware or rule shows up as a router status other than enabled, with its error.
    broken = {n: r.get("error") for n, r in routers().items() if n in wanted and r["status"] != "enabled"}
    assert broken == {}

    defined = load_yaml(TRAEFIK_DIR / "dynamic" / "stack.yml")["http"]["middlewares"]
    status, body, _ = fetch(f"{api}/http/middlewares")
    loaded = {m["name"]: m["status"] for m in json.loads(body) if m["provider"] == "file"}
    assert loaded == {f"{name}@file": "enabled" for name in defined}

    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # Traefik's self-signed default
    https = f"https://127.0.0.1:{ports['websecure']}"
    assert fetch(f"{https}/flower/", context=insecure)[0] == 401
    status, _, headers = fetch(f"{https}/flower/", basic_auth(FLOWER_USER, FLOWER_PASSWORD), insecure)
    assert status in {502, 503}, "auth passed; there is no Flower behind it here"

    # urllib follows redirects; a redirect to https:// on port 443 it cannot reach would hide the 30x.
    conn = http.client.HTTPConnection("127.0.0.1", ports["web"], timeout=5)
    conn.request("GET", "/anything")
    response = conn.getresponse()
    conn.close()
    assert response.status in {301, 308}
    assert response.getheader("Location").startswith("https://127.0.0.1")
    errors = [line for line in processes.log("traefik").splitlines() if " ERR " in line]
    assert errors == []


@pytest.mark.stack
def test_admin_routes_refuse_addresses_outside_the_allow_list(tmp_path, processes):
    ports = {name: free_port() for name in ("web", "websecure", "ping", "traefik")}
    htpasswd = write_htpasswd(tmp_path / "htpasswd", FLOWER_USER, FLOWER_PASSWORD)
    static = production_copy(tmp_path, ports, htpasswd, admin_ranges=["10.0.0.0/8"])
    start_traefik(processes, static, f"http://127.0.0.1:{ports['ping']}/ping")
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    https = f"https://127.0.0.1:{ports['websecure']}"
    auth = basic_auth(FLOWER_USER, FLOWER_PASSWORD)
    wait_until(
        lambda: fetch(f"{https}/flower/", auth, insecure)[0] == 403,
        15,
        interval=0.1,
        message="waiting for the allow-list in force",
    )
    assert fetch(f"{https}/metrics", auth, insecure)[0] == 403  # the right password does not help
    # The user-facing routes are not on the allow-list: they reach the (absent) web servers.
    assert fetch(f"{https}/", context=insecure)[0] in {502, 503}


@pytest.mark.stack
@pytest.mark.services
def test_behind_traefiks_https_the_app_sends_hsts_and_secure_cookies(tmp_path, processes, clean_state):
    """The production config in front of the real app: HTTPS as Traefik reports it (X-Forwarded-Proto)."""
    import threading

    from werkzeug.serving import make_server

    from cvunet_matting.web import create_app

    app_port = free_port()
    server = make_server("127.0.0.1", app_port, create_app(), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ports = {name: free_port() for name in ("web", "websecure", "ping", "traefik")}
        htpasswd = write_htpasswd(tmp_path / "htpasswd", FLOWER_USER, FLOWER_PASSWORD)
        app_url = f"http://127.0.0.1:{app_port}"
        static = production_copy(tmp_path, ports, htpasswd, app_urls=(app_url, app_url))
        start_traefik(processes, static, f"http://127.0.0.1:{ports['ping']}/ping")
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        login = f"https://127.0.0.1:{ports['websecure']}/login"
        wait_until(lambda: fetch(login, context=insecure)[0] == 200, 15, interval=0.1, message="the app via Traefik")
        _, _, headers = fetch(login, context=insecure)
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        cookie = headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        metrics = fetch(f"https://127.0.0.1:{ports['websecure']}/metrics", context=insecure)
        assert metrics[0] == 401  # the allow-list lets 127.0.0.1 in; the app still wants an admin
    finally:
        server.shutdown()
        server.server_close()


def insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # Traefik's self-signed default
    return context


def wait_for_routers(api: str, names) -> None:
    def loaded() -> set[str]:
        status, body, _ = fetch(f"{api}/http/routers")
        return {r["name"] for r in json.loads(body)} if status == 200 else set()

    wanted = {f"{name}@file" for name in names}
    wait_until(lambda: wanted <= loaded(), 15, interval=0.1, message="waiting for the file provider's routers")


@pytest.mark.stack
def test_production_routes_stream_downloads_and_still_limit_uploads(tmp_path, processes):
    """The production routers: GETs under / and /api stream (no temp file), POSTs over 64 MiB are refused
    under both, and POSTs to /flower and /metrics still meet the admin allow-list (explicit priorities)."""
    web_port = free_port()
    files = {"healthz": "ok\n"}
    start_backend(processes, tmp_path, "web", web_port, files)
    for rel in ("big.zip", "api/v1/batches/b1/zip"):
        (tmp_path / "web" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "web" / rel).write_bytes(os.urandom(BIG))
    ports: dict[str, int] = {}
    htpasswd = write_htpasswd(tmp_path / "htpasswd", FLOWER_USER, FLOWER_PASSWORD)
    web = f"http://127.0.0.1:{web_port}"
    static = production_copy(tmp_path, ports, htpasswd, admin_ranges=["10.0.0.0/8"], app_urls=(web, web))
    temp_dir = tmp_path / "traefik-tmp"
    temp_dir.mkdir()
    start_traefik(processes, static, f"http://127.0.0.1:{ports['ping']}/ping", temp_dir)
    wait_for_routers(f"http://127.0.0.1:{ports['traefik']}/api", ["app", "app-read", "api", "api-read"])
    https, tls = f"https://127.0.0.1:{ports['websecure']}", insecure_tls()
    wait_until(lambda: fetch(f"{https}/healthz", context=tls)[0] == 200, 15, interval=0.1, message="the app route")
    traefik = processes.running["traefik"].pid
    for path in ("/big.zip", "/api/v1/batches/b1/zip"):
        conn, response = start_download(https, path, 64 * 1024, tls)
        try:
            assert [size for size in spooled(temp_dir, traefik) if size >= 1024 * 1024] == [], path
            assert len(response.read()) == BIG - 64 * 1024
        finally:
            conn.close()
    for path in ("/upload", "/api/v1/images", "/flower/api/task/async-apply/x", "/metrics"):
        conn = connect(https, tls)
        try:
            conn.putrequest("POST", path)
            conn.putheader("Content-Length", str(BODY_LIMIT + 1))
            conn.putheader("Authorization", basic_auth(FLOWER_USER, FLOWER_PASSWORD)["Authorization"])
            conn.endheaders(b"x" * 1024)
            status = conn.getresponse().status
        finally:
            conn.close()
        assert status == (403 if path in {"/metrics", "/flower/api/task/async-apply/x"} else 413), path


@pytest.mark.stack
def test_flowers_admin_check_reaches_any_live_web_instance(tmp_path, processes):
    """The production forwardAuth goes through Traefik's app service: with web1 dead (not yet seen by the
    5 s health check, so round robin still picks it), every check is answered by web2."""
    ports: dict[str, int] = {}
    web_ports = {"web1": free_port(), "web2": free_port()}
    for name, port in web_ports.items():
        start_backend(processes, tmp_path, name, port, web_files(name))
    flower_port = free_port()
    flower_files = {"flower/index.html": "flower dashboard\n", "healthz": ""}
    start_backend(processes, tmp_path, "flower", flower_port, flower_files)
    htpasswd = write_htpasswd(tmp_path / "htpasswd", FLOWER_USER, FLOWER_PASSWORD)
    urls = tuple(f"http://127.0.0.1:{port}" for port in web_ports.values())
    static = production_copy(tmp_path, ports, htpasswd, app_urls=urls, flower_url=f"http://127.0.0.1:{flower_port}")
    start_traefik(processes, static, f"http://127.0.0.1:{ports['ping']}/ping")
    wait_for_routers(f"http://127.0.0.1:{ports['traefik']}/api", ["flower", "admin-check"])
    flower, tls = f"https://127.0.0.1:{ports['websecure']}/flower/", insecure_tls()
    auth = basic_auth(FLOWER_USER, FLOWER_PASSWORD)
    wait_until(lambda: fetch(flower, auth, tls)[0] == 200, 15, interval=0.1, message="Flower through its checks")
    processes.stop("web1")
    answers = [fetch(flower, auth, tls)[:2] for _ in range(8)]
    assert answers == [(200, "flower dashboard\n")] * 8
    # The check really went through the auth entrypoint to the app service (web2 answered it).
    assert "GET /auth/admin" in processes.log("web2")
