"""`make k8s-check`: render both overlays, validate every object, and check the project's own rules.

1. `kubectl kustomize` renders overlays/cpu and overlays/gpu.
2. Every Kubernetes object validates, unknown fields refused, against the schemas kubernetes-validate
   ships (Kubernetes KUBERNETES_VERSION); the custom resources (KEDA, Traefik, the Prometheus operator)
   against their CRDs' schemas vendored in schemas/ (schemas/SOURCES.md), unknown fields refused too,
   as the API server's strict field validation does.
3. The rules below (`policy`): non-root and read-only pods, resources set, readiness probes, no
   secret in arguments or literal environment values, the images `make compose-test` builds, the GPU
   workers' drain outlasting an image's time limit, Traefik's routes and the alert rules the same as
   compose's (traefik/dynamic/stack.yml, monitoring/rules/cvunet.yml).

    python deploy/kubernetes/k8s_check.py [OVERLAY_DIR ...]     # exit 1 and one line per problem
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OVERLAYS = (HERE / "overlays" / "cpu", HERE / "overlays" / "gpu")
KUBERNETES_VERSION = "1.30"  # the oldest the manifests need (preStop `sleep`)
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("traefik.io/v1alpha1", "IngressRoute"): "ingressroute-traefik-v1alpha1.json",
    ("traefik.io/v1alpha1", "Middleware"): "middleware-traefik-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
SERVING = ("Deployment", "StatefulSet")  # a Job's pod serves nothing: no readiness probe asked
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|AUTH", re.IGNORECASE)
# A URL with a password in it that is not a $(VAR) reference to a variable from a Secret.
URL_PASSWORD = re.compile(r"://[^/\s:@]*:(?!\$\()[^@\s]+@")
# Compose reads the data root's free space from a node exporter's /data mount; a cluster from the
# kubelet's figures for the claim. The one change the PrometheusRule makes to the compose rules.
K8S_SERIES = {
    'node_filesystem_avail_bytes{mountpoint="/data"}': (
        'kubelet_volume_stats_available_bytes{persistentvolumeclaim="cvunet-data"}'
    ),
    'node_filesystem_size_bytes{mountpoint="/data"}': (
        'kubelet_volume_stats_capacity_bytes{persistentvolumeclaim="cvunet-data"}'
    ),
}
TRAEFIK_SERVICES = {"app": ("web", 8000), "flower": ("flower", 5555)}


def render(overlay: Path) -> list[dict[str, Any]]:
    try:
        out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("kubectl not found: install it (https://kubernetes.io/docs/tasks/tools/)") from None
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- schemas ------------------------------------------------------------------------------------


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones (strict validation)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    file = CRD_SCHEMAS.get((api_version, kind))
    if file is None:
        return None
    schema = closed(json.loads((HERE / "schemas" / file).read_text()))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server
    return schema


def schema_errors(obj: dict[str, Any]) -> list[str]:
    schema = crd_schema(obj.get("apiVersion", ""), obj.get("kind", ""))
    if schema is not None:
        errors = jsonschema.Draft7Validator(schema).iter_errors(obj)
        return [f"{name_of(obj)}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name_of(obj)}: {'/'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name_of(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}"]
    return []


# --- policy -------------------------------------------------------------------------------------


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objs:
        if obj.get("kind") in WORKLOADS:
            yield obj, obj["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod.get("containers", [])


def container_problems(obj: dict[str, Any], pod: dict[str, Any], c: dict[str, Any]) -> Iterator[str]:
    where = f"{name_of(obj)}: container {c['name']}"
    pod_ctx, ctx = pod.get("securityContext", {}), c.get("securityContext", {})
    if not (ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) and ctx.get("runAsUser", pod_ctx.get("runAsUser"))):
        yield f"{where}: must run as a non-root user (runAsNonRoot and runAsUser)"
    if ctx.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation must be false"
    if ctx.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: readOnlyRootFilesystem must be true (mount an emptyDir where it writes)"
    if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
        yield f"{where}: capabilities must drop ALL"
    resources = c.get("resources", {})
    for kind, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        missing = [k for k in keys if k not in resources.get(kind, {})]
        if missing:
            yield f"{where}: resources.{kind} must set {', '.join(missing)}"
    if obj["kind"] in SERVING and "readinessProbe" not in c:
        yield f"{where}: no readinessProbe"
    yield from secret_problems(where, c)


def secret_problems(where: str, c: dict[str, Any]) -> Iterator[str]:
    from_secrets = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for word in c.get("command", []) + c.get("args", []):
        if URL_PASSWORD.search(word):
            yield f"{where}: a password in its arguments"
        # Kubernetes expands $(VAR) in command and args: the secret would be in argv (`ps`).
        for var in re.findall(r"\$\((\w+)\)", word):
            if var in from_secrets:
                yield f"{where}: secret ${var} expanded into its arguments"
    for env in c.get("env", []):
        if "value" not in env:
            continue
        if SECRET_NAME.search(env["name"]) and env["value"]:
            yield f"{where}: {env['name']} is a literal value; take it from a Secret (secretKeyRef)"
        if URL_PASSWORD.search(env["value"]):
            yield f"{where}: {env['name']} holds a password literally; use $(VAR) from a secretKeyRef"


def built_images(repo: Path) -> dict[str, str]:
    """The project images `make compose-test` builds, image -> device ('web', 'cpu' or 'cuda')."""
    script = (repo / "docker" / "ci" / "compose-test.sh").read_text()
    built = {f"cvunet-matting-web:{tag}": "web" for tag in re.findall(r'-t "?cvunet-matting-web:([\w.-]+)', script)}
    if re.search(r'-t "cvunet-matting-worker:\$2"', script):
        for device, tag in re.findall(r"^\s*build_worker (cpu|cuda) ([\w.-]+)", script, re.MULTILINE):
            built[f"cvunet-matting-worker:{tag}"] = device
    return built


def compose_images(repo: Path) -> set[str]:
    """Third-party images exactly as docker/compose.yml names them by default (`${VAR:-image}`)."""
    compose = (repo / "docker" / "compose.yml").read_text()
    return set(re.findall(r'image: "\$\{[A-Z_]+_IMAGE:-([^}]+)\}"', compose))


def image_problems(objs: list[dict[str, Any]], repo: Path) -> Iterator[str]:
    built, others = built_images(repo), compose_images(repo)
    for obj, pod in pod_specs(objs):
        for c in containers(pod):
            image = c.get("image", "")
            where = f"{name_of(obj)}: container {c['name']}"
            if image.startswith("cvunet-matting-"):
                if image not in built:
                    yield f"{where}: image {image} is not one `make compose-test` builds ({sorted(built)})"
                gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
                if gpus is not None and built.get(image) != "cuda":
                    yield f"{where}: requests a GPU but runs {image}, not the CUDA worker image"
                if gpus not in (None, 1, "1"):
                    yield f"{where}: one GPU per pod (one Celery worker per GPU), not {gpus}"
            elif image not in others:
                yield f"{where}: image {image} is none of docker/compose.yml's ({sorted(others)})"


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in objs if o.get("kind") == kind and o["metadata"]["name"] == name), None)


def scaling_problems(objs: list[dict[str, Any]]) -> Iterator[str]:
    config = find(objs, "ConfigMap", "cvunet-config")
    hard = int((config or {}).get("data", {}).get("CVUNET_TASK_HARD_LIMIT", 600))
    worker = find(objs, "Deployment", "worker")
    if worker is None:
        yield "Deployment/worker: missing"
        return
    pod = worker["spec"]["template"]["spec"]
    if pod.get("terminationGracePeriodSeconds", 30) <= hard:
        yield f"Deployment/worker: terminationGracePeriodSeconds must outlast an image's hard limit ({hard} s)"
    if not any(c.get("lifecycle", {}).get("preStop") for c in pod["containers"]):
        yield "Deployment/worker: no preStop hook to stop consuming before it is stopped"
    scaled = find(objs, "ScaledObject", "worker")
    if scaled is None:
        yield "ScaledObject/worker: missing"
        return
    spec = scaled["spec"]
    if spec.get("cooldownPeriod", 300) <= hard:
        yield f"ScaledObject/worker: cooldownPeriod must be longer than an image's hard limit ({hard} s)"
    if spec.get("minReplicaCount", 0) != 0:
        yield "ScaledObject/worker: minReplicaCount must be 0 (scale to zero when idle)"
    queries = [t.get("metadata", {}).get("query", "") for t in spec.get("triggers", [])]
    if not any("cvunet_queue_work" in q for q in queries):
        yield "ScaledObject/worker: must scale on cvunet_queue_work (waiting and in hand), not the list's length"


def traefik_problems(objs: list[dict[str, Any]], repo: Path) -> Iterator[str]:
    """The IngressRoutes and Middlewares say what traefik/dynamic/stack.yml says."""
    stack = yaml.safe_load((repo / "traefik" / "dynamic" / "stack.yml").read_text())["http"]
    for name, router in stack["routers"].items():
        route = find(objs, "IngressRoute", name)
        if route is None:
            yield f"IngressRoute/{name}: missing (a router of traefik/dynamic/stack.yml)"
            continue
        spec, rule = route["spec"], route["spec"]["routes"][0]
        service = TRAEFIK_SERVICES[router["service"]]
        found = (spec["entryPoints"], rule["match"], rule.get("priority", 0), rule.get("middlewares", []))
        wanted = (router["entryPoints"], router["rule"], router.get("priority", 0), router.get("middlewares", []))
        if found[:3] != wanted[:3] or [m["name"] for m in found[3]] != wanted[3]:
            yield f"IngressRoute/{name}: differs from stack.yml's router (entry points, rule, priority or middlewares)"
        if [(s["name"], s["port"]) for s in rule["services"]] != [service]:
            yield f"IngressRoute/{name}: must go to {service}"
    for name, middleware in stack["middlewares"].items():
        found_mw = find(objs, "Middleware", name)
        if found_mw is None:
            yield f"Middleware/{name}: missing (a middleware of traefik/dynamic/stack.yml)"
        elif comparable(middleware) != comparable(found_mw["spec"]):
            yield f"Middleware/{name}: differs from stack.yml's"


def comparable(middleware: dict[str, Any]) -> dict[str, Any]:
    """A middleware less what Kubernetes names its own way (a service, a secret, a users file)."""
    out = copy.deepcopy(middleware)
    out.get("errors", {}).pop("service", None)
    out.get("basicAuth", {}).pop("usersFile", None)
    out.get("basicAuth", {}).pop("secret", None)
    return out


def rule_problems(objs: list[dict[str, Any]], repo: Path) -> Iterator[str]:
    rule = find(objs, "PrometheusRule", "cvunet")
    if rule is None:
        yield "PrometheusRule/cvunet: missing"
        return
    wanted = yaml.safe_load((repo / "monitoring" / "rules" / "cvunet.yml").read_text())
    for group in wanted["groups"]:
        for r in group["rules"]:
            for compose_series, cluster_series in K8S_SERIES.items():
                r["expr"] = r["expr"].replace(compose_series, cluster_series)
    if rule["spec"] != wanted:
        yield "PrometheusRule/cvunet: differs from monitoring/rules/cvunet.yml"


def policy(objs: list[dict[str, Any]], repo: Path = REPO) -> list[str]:
    problems: list[str] = []
    for obj, pod in pod_specs(objs):
        for c in containers(pod):
            problems.extend(container_problems(obj, pod, c))
    for obj in objs:
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{name_of(obj)}: a Secret with its values in the manifests")
    problems.extend(image_problems(objs, repo))
    problems.extend(scaling_problems(objs))
    problems.extend(traefik_problems(objs, repo))
    problems.extend(rule_problems(objs, repo))
    return problems


def problems_of(objs: list[dict[str, Any]], repo: Path = REPO) -> list[str]:
    problems = [error for obj in objs for error in schema_errors(obj)]
    try:
        return problems + policy(objs, repo)
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # objects the schemas refused already
        return [*problems, f"the rules could not be checked: {exc!r}"]


def check(overlay: Path, repo: Path = REPO) -> list[str]:
    try:
        objs = render(overlay)
    except RuntimeError as exc:
        return [str(exc)]
    return problems_of(objs, repo)


def main(argv: list[str]) -> int:
    overlays = [Path(a) for a in argv] or list(OVERLAYS)
    failed = False
    for overlay in overlays:
        problems = check(overlay)
        for problem in problems:
            print(f"{overlay.name}: {problem}", file=sys.stderr)
        print(f"{overlay.name}: {'FAILED' if problems else 'ok'} ({len(problems)} problem(s))")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
