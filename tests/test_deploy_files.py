"""Deployment files: compose files as docker-compose resolves them, and the Dockerfiles' hygiene."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO, require_tool

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
WORKER_HOST = DOCKER / "compose.worker-host.yml"
CI_OVERRIDE = DOCKER / "compose.ci.yml"
DOCKERFILES = [DOCKER / "Dockerfile.web", DOCKER / "Dockerfile.worker"]
LOCAL_BASES = sorted((DOCKER / "local").glob("Dockerfile.*"))

# Dummy values, recognisable in the resolved output and absent from every committed file.
SECRETS = {
    "REDIS_PASSWORD": "dummy-redis-pw",
    "POSTGRES_PASSWORD": "dummy-pg-pw",
    "CVUNET_SECRET_KEY": "dummy-secret-key",
    "FLOWER_USER": "dummy-flower-user",
    "FLOWER_PASSWORD": "dummy-flower-pw",
    "TRAEFIK_HTPASSWD_FILE": "/etc/cvunet/htpasswd",
    "PROMETHEUS_TOKEN_FILE": "/etc/cvunet/prometheus-token",
}
WORKER_HOST_ENV = {
    "REDIS_PASSWORD": SECRETS["REDIS_PASSWORD"],
    "POSTGRES_PASSWORD": SECRETS["POSTGRES_PASSWORD"],
    "CENTRAL_HOST": "10.9.8.7",
    "NFS_SERVER": "10.9.8.6",
    "NFS_EXPORT": "/export/cvunet-data",
    "WORKER_HOST_NAME": "gpuhost2",
}
SECRET_KEY_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH")
REQUIRED_REF = re.compile(r"\$\{\w+:\?[^}]*\}")
# Secrets that may be left out, each for a reason: the deprecated operator tokens (per-user keys replace them).
OPTIONAL_SECRETS = {"CVUNET_API_TOKENS": "${CVUNET_API_TOKENS:-}"}


def compose_config(path: Path, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`docker-compose config` with only `env`: an empty --env-file keeps a local docker/.env out."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    argv = [require_tool("docker-compose"), "-f", str(path), "--env-file", str(empty), "config"]
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(argv, env=base | env, capture_output=True, text=True, timeout=60)


# Resolved once per module (docker-compose takes a CPU second a call), parsed afresh for each test.
@pytest.fixture(scope="module")
def stack_config(tmp_path_factory) -> str:
    result = compose_config(COMPOSE, SECRETS, tmp_path_factory.mktemp("stack"))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def worker_host_config(tmp_path_factory) -> str:
    result = compose_config(WORKER_HOST, WORKER_HOST_ENV, tmp_path_factory.mktemp("worker-host"))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def stack(stack_config) -> dict:
    return yaml.safe_load(stack_config)


@pytest.fixture
def worker_host(worker_host_config) -> dict:
    return yaml.safe_load(worker_host_config)


def gpu_devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


# --- compose.yml -----------------------------------------------------------------------------


def test_compose_has_the_whole_stack(stack):
    assert set(stack["services"]) == {
        "traefik",
        "web1",
        "web2",
        "worker-gpu0",
        "worker-gpu1",
        "redis",
        "postgres",
        "migrate",
        "flower",
        "prometheus",
        "node-exporter",
    }


def test_long_running_services_have_healthcheck_and_restart(stack):
    for name, service in stack["services"].items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        if name == "node-exporter":  # no HTTP client in its image; a dead exporter ends its container
            assert service.get("restart") == "unless-stopped"
            continue
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, name


def test_web_and_workers_wait_for_migrate(stack):
    for name in ("web1", "web2", "worker-gpu0", "worker-gpu1"):
        depends = stack["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    first_admin = "/var/lib/cvunet-admin/first-admin"
    assert stack["services"]["migrate"]["command"] == [
        "cvunet-matting",
        "db",
        "upgrade",
        "--first-admin-file",
        first_admin,
    ]


def test_the_first_admins_password_goes_to_a_volume_only_migrate_mounts(stack):
    """Not to migrate's log (issue 26): a file (0600, from `db upgrade`) on a volume of its own, which no
    service that serves files (web, from /data) mounts."""
    mounts = {name: [v.split(":")[1] for v in s.get("volumes", [])] for name, s in stack["services"].items()}
    assert [name for name, paths in mounts.items() if "/var/lib/cvunet-admin" in paths] == ["migrate"]
    assert "first-admin" in stack["volumes"]
    dockerfile = (DOCKER / "Dockerfile.web").read_text()
    assert "install -d -o app -g app -m 700 /var/lib/cvunet-admin" in dockerfile  # the volume's owner and mode


def test_each_worker_reserves_its_own_nvidia_gpu(stack):
    seen = []
    for name in ("worker-gpu0", "worker-gpu1"):
        service = stack["services"][name]
        (device,) = gpu_devices(service)
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        seen += device["device_ids"]
        assert service["environment"]["CVUNET_DEVICE"] == "cuda"
    assert sorted(seen) == ["0", "1"]


def test_redis_needs_a_password_and_never_evicts(stack):
    redis = stack["services"]["redis"]
    script = " ".join(redis["command"])
    assert "requirepass %s" in script and "$REDIS_PASSWORD" in script  # from the environment, into a file
    assert SECRETS["REDIS_PASSWORD"] not in script  # never on the command line (`ps` shows argv)
    assert redis["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    assert "--maxmemory-policy noeviction" in script and "--appendonly yes" in script
    env = stack["services"]["web1"]["environment"]
    assert env["CVUNET_REDIS_URL"] == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"
    assert env["CVUNET_DATABASE_URL"] == (
        f"postgresql://cvunet:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/cvunet?sslmode=prefer"
    )


def test_web_workers_and_flower_share_the_data_volume(stack):
    for name in ("web1", "web2", "worker-gpu0", "worker-gpu1"):
        assert any(v.startswith("data:/data") for v in stack["services"][name]["volumes"]), name
        assert stack["services"][name]["environment"]["CVUNET_DATA_DIR"] == "/data"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing, tmp_path):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = compose_config(COMPOSE, env, tmp_path)
    assert result.returncode != 0
    assert missing in result.stderr


def test_traefik_routes_match_compose_services(stack):
    """The server URLs in traefik/dynamic/stack.yml must be compose's service names and ports."""
    dynamic = yaml.safe_load((REPO / "traefik" / "dynamic" / "stack.yml").read_text())
    urls = [s["url"] for svc in dynamic["http"]["services"].values() for s in svc["loadBalancer"]["servers"]]
    assert urls == ["http://web1:8000", "http://web2:8000", "http://flower:5555"]
    # Flower's admin check asks Traefik's own loopback entrypoint, which sends it to that app service.
    check = dynamic["http"]["middlewares"]["admin-session"]["forwardAuth"]["address"]
    static = yaml.safe_load((REPO / "traefik" / "traefik.yml").read_text())
    assert check == f"http://{static['entryPoints']['auth']['address']}/auth/admin"
    assert "127.0.0.1:8083" not in str(stack["services"]["traefik"].get("ports"))  # never published


def test_the_web_instances_believe_forwarded_headers_from_traefik_alone(stack):
    """Traefik has a fixed address on a fixed subnet, outside the range Docker hands out, and the web
    instances trust exactly that address (CVUNET_TRUSTED_PROXIES), not the network (issue 26)."""
    import ipaddress

    (pool,) = stack["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    traefik = ipaddress.ip_address(stack["services"]["traefik"]["networks"]["default"]["ipv4_address"])
    assert traefik in subnet and traefik not in dynamic and dynamic.subnet_of(subnet)
    for name in ("web1", "web2"):
        assert stack["services"][name]["environment"]["CVUNET_TRUSTED_PROXIES"] == str(traefik), name


def test_no_worker_publishes_its_metrics(stack, worker_host, tmp_path):
    """A worker's /metrics has no credential: 0.0.0.0 inside its container is the compose network only,
    and no compose file publishes it (a GPU host publishes it on a private address by hand: README)."""
    ci = compose_config_ci(tmp_path)
    workers = [s for c in (stack, worker_host, ci) for n, s in c["services"].items() if n.startswith("worker-")]
    assert len(workers) == 2 + 2 + 5  # compose.yml's GPU workers, the GPU host's, and CI's GPU and CPU ones
    for service in workers:
        assert service["environment"]["CVUNET_METRICS_ADDR"] == "0.0.0.0"
        assert not service.get("ports"), service["hostname"]
    assert "--port=5555" in stack["services"]["flower"]["command"]
    assert "--url_prefix=flower" in stack["services"]["flower"]["command"]

    static = yaml.safe_load((REPO / "traefik" / "traefik.yml").read_text())
    mounts = {v.split(":")[1] for v in stack["services"]["traefik"]["volumes"]}
    assert static["providers"]["file"]["directory"] in mounts
    assert {"/etc/traefik/traefik.yml", "/etc/traefik/secrets/htpasswd"} <= mounts


# --- compose.worker-host.yml -----------------------------------------------------------------


def test_worker_host_runs_only_gpu_workers_against_the_central_host(worker_host):
    services = worker_host["services"]
    assert set(services) == {"worker-gpu0", "worker-gpu1"}
    for service in services.values():
        (device,) = gpu_devices(service)
        assert device["driver"] == "nvidia"
        env = service["environment"]
        assert f"@{WORKER_HOST_ENV['CENTRAL_HOST']}:6379/" in env["CVUNET_REDIS_URL"]
        assert f"@{WORKER_HOST_ENV['CENTRAL_HOST']}:5432/" in env["CVUNET_DATABASE_URL"]
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][0] == "CMD"
    # Celery node names come from the hostname: they must differ across hosts and GPUs.
    assert {s["hostname"] for s in services.values()} == {"gpuhost2-gpu0", "gpuhost2-gpu1"}


def test_worker_hosts_reach_redis_and_postgres_on_the_ports_the_central_host_publishes(tmp_path):
    moved = {**WORKER_HOST_ENV, "REDIS_PORT": "6390", "POSTGRES_PORT": "5440", "POSTGRES_SSLMODE": "require"}
    result = compose_config(WORKER_HOST, moved, tmp_path)
    assert result.returncode == 0, result.stderr
    for service in yaml.safe_load(result.stdout)["services"].values():
        env = service["environment"]
        assert f"@{WORKER_HOST_ENV['CENTRAL_HOST']}:6390/0" in env["CVUNET_REDIS_URL"]
        assert env["CVUNET_DATABASE_URL"].endswith(f"@{WORKER_HOST_ENV['CENTRAL_HOST']}:5440/cvunet?sslmode=require")


def test_worker_host_data_is_the_nfs_export(worker_host):
    opts = worker_host["volumes"]["data"]["driver_opts"]
    assert opts["type"] == "nfs"
    assert f"addr={WORKER_HOST_ENV['NFS_SERVER']}" in opts["o"]
    assert opts["device"] == f":{WORKER_HOST_ENV['NFS_EXPORT']}"


# --- secrets ---------------------------------------------------------------------------------


def environment_items(compose: dict):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            yield name, key, str(value)


@pytest.mark.parametrize("path", [COMPOSE, WORKER_HOST], ids=lambda p: p.name)
def test_compose_files_hold_no_secret_values(path):
    text = path.read_text()
    raw = yaml.safe_load(text)
    for service, key, value in environment_items(raw):
        if OPTIONAL_SECRETS.get(key) == value:
            continue  # a reference to the environment with an empty default, never a value
        if SECRET_KEY_NAME.search(key):
            refs = value.split(":${")  # user:password pairs (FLOWER_BASIC_AUTH) are two references
            assert all(REQUIRED_REF.fullmatch(r if i == 0 else "${" + r) for i, r in enumerate(refs)), (
                f"{service}.{key} must be made of required ${{VAR:?}} references"
            )
    # Passwords inside URLs, too.
    for password in re.findall(r"://[^:/@\s]*:([^@\s]+)@", text):
        assert REQUIRED_REF.fullmatch(password), password
    for value in SECRETS.values():
        assert value not in text


def test_env_example_leaves_every_secret_empty():
    entries = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(SECRETS) <= set(entries)
    assert {k: v for k, v in entries.items() if k in SECRETS} == dict.fromkeys(SECRETS, "")


# --- Dockerfiles -----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def args_of(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in instructions(path) if kw == keyword]


def base_images(path: Path) -> list[str]:
    """Each FROM's image, a build argument replaced by its default."""
    defaults = dict(arg.split("=", 1) for arg in args_of(path, "ARG") if "=" in arg)
    return [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), image.split()[0]) for image in args_of(path, "FROM")
    ]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_base_image_is_pinned(path):
    for name in base_images(path):
        tag = name.rpartition(":")[2] if ":" in name else ""
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned base image {name}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root_with_a_healthcheck(path):
    steps = instructions(path)
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # The last USER must come after the last RUN, or later steps run as root anyway.
    last_user = max(i for i, (kw, _) in enumerate(steps) if kw == "USER")
    assert all(i < last_user for i, (kw, _) in enumerate(steps) if kw == "RUN")
    (healthcheck,) = args_of(path, "HEALTHCHECK")
    assert "CMD" in healthcheck and "timeout" in healthcheck


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_hygiene(path):
    for args in args_of(path, "ADD"):
        assert not re.search(r"https?://", args), "ADD from a URL: fetch with a checked RUN instead"
    for args in args_of(path, "RUN"):
        for command in re.split(r"&&|;", args):
            if re.search(r"\bpip install\b", command):
                assert "--no-cache-dir" in command, command
    for args in args_of(path, "ENV") + args_of(path, "ARG"):
        assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", args), f"secret baked into the image: {args}"


def test_web_image_serves_gunicorn_on_8000():
    path = DOCKER / "Dockerfile.web"
    assert args_of(path, "EXPOSE") == ["8000"]
    (cmd,) = args_of(path, "CMD")
    assert "gunicorn" in cmd and "0.0.0.0:8000" in cmd and "cvunet_matting.web:create_app()" in cmd
    assert "/healthz" in args_of(path, "HEALTHCHECK")[0]
    # Its hooks add up /metrics over the processes; the folder is not baked in (Flower runs this image).
    assert '"-c", "python:cvunet_matting.webapp.gunicorn_conf"' in cmd
    assert not any("PROMETHEUS_MULTIPROC_DIR" in env for env in args_of(path, "ENV"))


def test_each_web_instance_keeps_its_metrics_folder_to_itself(stack):
    """prometheus_client's files in a folder of the container's own (not on a volume), only for gunicorn."""
    services = stack["services"]
    folders = {name: services[name]["environment"].get("PROMETHEUS_MULTIPROC_DIR") for name in ("web1", "web2")}
    assert all(folder and folder.startswith("/tmp/") for folder in folders.values()), folders
    for name in ("web1", "web2"):
        mounts = [v.split(":")[1] for v in services[name]["volumes"]]
        assert not any(folders[name].startswith(m.rstrip("/") + "/") or folders[name] == m for m in mounts), mounts
    for name in ("flower", "migrate"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in (services[name].get("environment") or {}), name


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_image_takes_onnxruntime_gpu_alone_and_bakes_the_model():
    runs = " && ".join(args_of(DOCKER / "Dockerfile.worker", "RUN"))
    # Both wheels write the module `onnxruntime`: the GPU image must never get the CPU one.
    assert "--extra gpu --without onnxruntime" in runs
    # The model comes in at build time; nothing downloads when a worker starts.
    assert "fetch_model(" in runs and "/opt/models" in runs
    assert any("CVUNET_MODEL_DIR=/opt/models" in env for env in args_of(DOCKER / "Dockerfile.worker", "ENV"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_come_from_setup_cfg_in_a_layer_below_the_source(path):
    """An edit to the code must not rebuild the wheels' layer (gigabytes with CUDA) nor refetch the model."""
    steps = instructions(path)
    copies = [(i, args) for i, (kw, args) in enumerate(steps) if kw == "COPY"]
    source = next(i for i, args in copies if args.startswith(". "))
    requirements = next(i for i, args in copies if args == "setup.cfg docker/requirements.py /tmp/requirements/")
    installs = [i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "pip install" in args]
    assert requirements < installs[0] < source
    after_source = [args for i, (kw, args) in enumerate(steps) if kw == "RUN" and i > source and "pip install" in args]
    assert after_source and all("--no-deps" in args for args in after_source), after_source
    fetches = [i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "fetch_model(" in args]
    assert all(i < source for i in fetches)


def module_file(parts: list[str]) -> str | None:
    """The file (relative to the package) of module `parts` below cvunet_matting, if there is one."""
    package = REPO / "cvunet_matting"
    for candidate in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if parts and (package / candidate).is_file():
            return candidate
    return None


def imported_files(rel: str) -> set[str]:
    """Package files that the module at `rel` imports itself (relative or absolute imports)."""
    here = rel.removesuffix(".py").split("/")[:-1]
    found = set()
    for node in ast.walk(ast.parse((REPO / "cvunet_matting" / rel).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cvunet_matting"):
            base = node.module.split(".")[1:]
        else:
            continue
        for alias in node.names:
            found.add(module_file([*base, alias.name]) or module_file(base) or "__init__.py")
    return found


def package_imports(module: str) -> set[str]:
    """cvunet_matting files (paths inside it) that `module` imports, directly or not, with the
    __init__.py of every package on their way."""
    seen, todo = set(), [module]
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            todo += imported_files(rel)
    packages = {"/".join([*rel.split("/")[:n], "__init__.py"]) for rel in seen for n in range(rel.count("/") + 1)}
    return seen | packages


def test_the_model_fetchers_copy_is_all_that_fetch_py_imports():
    copies = " ".join(args_of(DOCKER / "Dockerfile.worker", "COPY"))
    copied = set(re.findall(r"cvunet_matting/([\w/]+\.py)", copies))
    assert copied == package_imports("model/fetch.py")
    assert "cvunet_matting/model/manifests /tmp/fetcher/cvunet_matting/model/manifests" in copies


def test_the_requirements_script_reads_setup_cfg():
    script = load_script(DOCKER / "requirements.py")
    base = script.requirements(str(REPO / "setup.cfg"), [], [])
    assert "numpy>=1.26" in base and "onnxruntime>=1.17" in base and "celery[redis]>=5.3" in base
    gpu = script.requirements(str(REPO / "setup.cfg"), ["gpu"], ["onnxruntime"])
    assert "onnxruntime-gpu>=1.17" in gpu and not any(line.startswith("onnxruntime>") for line in gpu)
    assert set(gpu) - set(base) == {"onnxruntime-gpu>=1.17", "nvidia-ml-py>=12.535"}
    test = script.requirements(str(REPO / "setup.cfg"), ["test"], [])
    assert not any(line.startswith("#") for line in test) and "pytest>=8.0,<9" in test


def test_hadolint_finds_nothing():
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES + LOCAL_BASES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- buildable anywhere: bases as build arguments, CUDA from PyPI, a real CUDA check -----------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_a_build_argument_defaulting_to_upstream(path):
    assert args_of(path, "FROM") == ["${BASE}"]
    assert base_images(path) == ["python:3.11.14-slim-bookworm"]


def test_compose_passes_the_bases_and_names_every_image_by_variable(stack):
    for name in ("web1", "worker-gpu0"):
        assert stack["services"][name]["build"]["args"]["BASE"] == "python:3.11.14-slim-bookworm"
    args = stack["services"]["worker-gpu0"]["build"]["args"]
    assert args["DEVICE"] == "cuda" and args["CUDA_CHECK"] == "1"
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("traefik", "redis", "postgres", "prometheus", "node-exporter"):
        assert re.fullmatch(r"\$\{\w+_IMAGE:-[^}]+:v?\d+\.\d+[^}]*\}", raw[name]["image"]), name


def test_published_ports_are_configurable(stack):
    """By default Redis and PostgreSQL on 127.0.0.1 only; address and port both movable."""
    assert stack["services"]["redis"]["ports"] == ["127.0.0.1:6379:6379/tcp"]
    assert stack["services"]["postgres"]["ports"] == ["127.0.0.1:5432:5432/tcp"]
    raw = COMPOSE.read_text()
    for variable in ("REDIS_BIND", "REDIS_PORT", "POSTGRES_BIND", "POSTGRES_PORT", "HTTPS_PORT", "HTTP_PORT"):
        assert "${" + variable + ":-" in raw, variable


def test_worker_gets_cuda_from_pypi_and_checks_a_real_session():
    path = DOCKER / "Dockerfile.worker"
    runs = " && ".join(args_of(path, "RUN"))
    assert "onnxruntime-gpu[cuda,cudnn]" in runs  # CUDA runtime and cuDNN as NVIDIA's wheels
    assert "ld.so.conf.d" in runs and "nvidia" in runs
    assert "nvidia/cuda" not in path.read_text().split("FROM")[1]
    assert any(a.startswith("CUDA_CHECK=1") for a in args_of(path, "ARG"))
    assert 'if [ "$DEVICE" = cuda ] && [ "$CUDA_CHECK" = 1 ]; then cuda-check; fi' in runs
    check = (DOCKER / "cuda-check.py").read_text()
    assert "MattingSession(" in check and "predict_alpha(" in check  # a session, an inference


def test_ci_builds_the_gpu_worker_image_and_checks_its_libraries():
    script = (DOCKER / "ci" / "compose-test.sh").read_text()
    assert '--build-arg DEVICE="$1" --build-arg CUDA_CHECK=0' in script and "build_worker cuda ci-cuda" in script
    assert "cuda-check --libraries" in script


def test_the_library_check_names_what_the_loader_cannot_find(tmp_path, monkeypatch):
    """cuda-check --libraries on a host with the CPU wheel: no CUDA provider, a clear failure."""
    check = load_script(DOCKER / "cuda-check.py")
    monkeypatch.setattr(check, "cuda_provider", lambda: tmp_path / "libonnxruntime_providers_cuda.so")
    assert check.check_libraries() == 1
    monkeypatch.setattr(check, "cuda_provider", lambda: Path(sys.executable).resolve())
    monkeypatch.setattr(check, "CUDNN_PARTS", ())
    assert check.check_libraries() == 0  # every library Python links resolves
    monkeypatch.setattr(check, "CUDNN_PARTS", ("graph",))
    assert check.unknown_to_loader(["libcudnn_graph.so.9"]) == ["libcudnn_graph.so.9"]
    assert check.check_libraries() == 1


def compose_config_ci(tmp_path: Path) -> dict:
    """compose.yml with compose.ci.yml, as `make compose-test` runs them."""
    env = SECRETS | {"CI_MODEL_DIR": str(tmp_path)}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    argv = [require_tool("docker-compose"), "-f", str(COMPOSE), "-f", str(CI_OVERRIDE), "--env-file", str(empty)]
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([*argv, "config"], env=base | env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_ci_override_runs_cpu_workers_only(tmp_path):
    services = compose_config_ci(tmp_path)["services"]
    for name in ("worker-cpu0", "worker-cpu1", "worker-cpu2"):
        service = services[name]
        assert "deploy" not in service
        assert service["environment"]["CVUNET_DEVICE"] == "cpu"
        assert service["command"] == ["cvunet-matting", "worker", "--cpu", "1"]
        assert service["hostname"] == name
        assert any(v.startswith("data:/data") for v in service["volumes"])
    assert {s["hostname"] for n, s in services.items() if n.startswith("worker-cpu")} == {
        "worker-cpu0",
        "worker-cpu1",
        "worker-cpu2",
    }
