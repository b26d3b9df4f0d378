"""Issue 30: deploy/kubernetes renders, validates and keeps the project's rules (`make k8s-check`), and the
check fails on a deliberately broken manifest: an overlay of the real gpu overlay with faults patched in."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "deploy" / "kubernetes" / "k8s_check.py"
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl missing (`make machine` installs it)")

BROKEN = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {gpu}
patches:
  - target: {{kind: Deployment, name: web}}
    patch: |-
      - op: remove
        path: /spec/template/spec/containers/0/readinessProbe
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {{name: CVUNET_SECRET_KEY, value: not-from-a-secret}}
  - target: {{kind: Deployment, name: flower}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/readinessprobe
        value: {{}}
  - target: {{kind: ScaledObject, name: worker}}
    patch: |-
      - op: replace
        path: /spec/cooldownPeriod
        value: 60
      - op: add
        path: /spec/minReplicas
        value: 0
  - target: {{kind: Deployment, name: worker}}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/image
        value: cvunet-matting-worker:ci
  - target: {{kind: Middleware, name: api-ratelimit}}
    patch: |-
      - op: replace
        path: /spec/rateLimit/average
        value: 1000
"""


def load_checker():
    spec = importlib.util.spec_from_file_location("k8s_check", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(*overlays: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECKER), *map(str, overlays)], capture_output=True, text=True, check=False, cwd=REPO
    )


def test_both_overlays_pass():
    done = run_check()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["cpu: ok (0 problem(s))", "gpu: ok (0 problem(s))"]


def test_the_check_fails_on_a_broken_manifest(tmp_path):
    gpu = os.path.relpath(REPO / "deploy" / "kubernetes" / "overlays" / "gpu", tmp_path)  # kustomize: relative only
    (tmp_path / "kustomization.yaml").write_text(BROKEN.format(gpu=gpu))
    done = run_check(tmp_path)
    assert done.returncode == 1
    found = done.stderr
    expected = [
        "Deployment/web: container web: no readinessProbe",
        "Deployment/web: container web: CVUNET_SECRET_KEY is a literal value",
        "Deployment/flower: spec/template/spec/containers/0: Additional properties are not allowed ('readinessprobe'",
        "ScaledObject/worker: spec: Additional properties are not allowed ('minReplicas'",
        "ScaledObject/worker: cooldownPeriod must be longer than an image's hard limit (600 s)",
        "Deployment/worker: container worker: requests a GPU but runs cvunet-matting-worker:ci",
        "Middleware/api-ratelimit: differs from stack.yml's",
    ]
    assert [line for line in expected if line not in found] == [], found


def test_a_manifest_that_does_not_render_fails(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    done = run_check(tmp_path)
    assert done.returncode == 1 and "kubectl kustomize" in done.stderr


def test_the_images_are_the_ones_compose_test_builds():
    checker = load_checker()
    built = checker.built_images(REPO)
    assert built == {
        "cvunet-matting-web:ci": "web",
        "cvunet-matting-worker:ci": "cpu",
        "cvunet-matting-worker:ci-cuda": "cuda",
    }
    images = {
        overlay.name: {c["image"] for _, pod in checker.pod_specs(checker.render(overlay)) for c in pod["containers"]}
        for overlay in checker.OVERLAYS
    }
    assert "cvunet-matting-worker:ci-cuda" in images["gpu"] and "cvunet-matting-worker:ci" not in images["gpu"]
    assert "cvunet-matting-worker:ci" in images["cpu"] and "cvunet-matting-worker:ci-cuda" not in images["cpu"]


def test_the_gpu_workers_take_one_gpu_each_and_drain_before_they_stop():
    checker = load_checker()
    objs = checker.render(checker.OVERLAYS[1])
    pod = checker.find(objs, "Deployment", "worker")["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["command"] == ["cvunet-matting", "worker", "--gpus", "0", "--no-bookkeeping"]
    assert "cancel_consumer" in " ".join(worker["lifecycle"]["preStop"]["exec"]["command"])
    scaled = checker.find(objs, "ScaledObject", "worker")["spec"]
    assert scaled["minReplicaCount"] == 0 and scaled["cooldownPeriod"] > 600
    assert "cvunet_queue_work" in scaled["triggers"][0]["metadata"]["query"]
