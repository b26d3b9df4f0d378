"""Monitoring: Prometheus's configuration and alert rules, checked and unit-tested by promtool, and the
data root's metrics the web's /metrics serves (disk usage at scrape time, data size as retention measured)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cvunet_matting.cleanup.retention import expire
from cvunet_matting.storage.files import Storage
from cvunet_matting.web import create_app
from tests import support
from tests.support import REPO, require_tool

MONITORING = REPO / "monitoring"
RULES = MONITORING / "rules" / "cvunet.yml"
RULE_TESTS = MONITORING / "tests" / "cvunet_test.yml"
PROMTOOL_HINT = "apt-get install prometheus (`make machine` runs .ci/prepare-machine)"


def promtool(*args: str) -> subprocess.CompletedProcess:
    argv = [require_tool("promtool", PROMTOOL_HINT), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def test_rules_are_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alert_names() == fired


def test_the_alerts_the_deployment_needs_exist():
    assert {
        "WorkerDown",
        "QueueGrowingWorkersIdle",
        "GpuIdleWhileImagesWait",
        "TaskFailureRateHigh",
        "DataDiskAlmostFull",
        "DataDiskFillsWithinADay",
    } <= alert_names()


def test_prometheus_config_is_valid(tmp_path):
    """promtool checks the file as Prometheus reads it: rules and targets at their mounted paths."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES)]
    token = tmp_path / "web-token"
    token.write_text("an-admin-api-key")
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(MONITORING / "targets" / "workers.yml")]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_metrics_are_read_with_an_api_key_compose_mounts():
    """The web instances' /metrics needs an admin's key: compose mounts a required file for it."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (web,) = [job for job in config["scrape_configs"] if job["job_name"] == "web"]
    path = web["authorization"]["credentials_file"]
    prometheus = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())["services"]["prometheus"]
    assert any(v.endswith(f":{path}:ro") and "PROMETHEUS_TOKEN_FILE:?" in v for v in prometheus["volumes"])


def test_scrape_targets_are_compose_services():
    """Every scraped host:port is a service of the compose files, on the port it serves metrics on."""
    compose = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())["services"]
    ci = yaml.safe_load((REPO / "docker" / "compose.ci.yml").read_text())["services"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    static = [t for job in config["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    assert {t.split(":")[0] for t in static if not t.startswith("127.")} <= set(compose)
    for name, services in (("workers", compose), ("workers-cpu", ci)):
        groups = yaml.safe_load((MONITORING / "targets" / f"{name}.yml").read_text())
        hosts = {t.split(":")[0] for g in groups for t in g["targets"]}
        assert hosts and hosts <= set(services), name
        assert {t.split(":")[1] for g in groups for t in g["targets"]} == {"9100"}


def scraped(client) -> dict[str, float]:
    """The unlabelled samples of one /metrics scrape, by name."""
    response = client.get("/metrics")
    assert response.status_code == 200
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {s.name: s.value for family in families for s in family.samples if not s.labels}


@pytest.mark.services
def test_metrics_show_the_data_disk_and_the_data_size_retention_measured(clean_state):
    client = support.user_client(create_app({"TESTING": True}), support.make_user(admin=True, prefix="admin"))
    settings = support.settings()
    storage = Storage(settings.data_dir)
    storage.put_input(b"i" * 1000)
    (storage.outputs / "images" / "t").mkdir(parents=True)
    (storage.outputs / "images" / "t" / "a.png").write_bytes(b"o" * 2345)
    (storage.outputs / "outputs_1" / "deep").mkdir(parents=True)
    (storage.outputs / "outputs_1" / "deep" / "run.zip").write_bytes(b"z" * 678)
    (storage.outputs / "link.png").symlink_to(storage.outputs / "images" / "t" / "a.png")  # not counted twice
    (settings.data_dir / "incoming").mkdir()
    (settings.data_dir / "incoming" / "theirs.png").write_bytes(b"x" * 5000)  # not the service's files

    before = scraped(client)
    assert before["cvunet_data_disk_free_bytes"] > 0
    assert before["cvunet_data_disk_total_bytes"] == shutil.disk_usage(settings.data_dir).total
    assert (
        before["cvunet_data_disk_used_bytes"] + before["cvunet_data_disk_free_bytes"]
        <= before["cvunet_data_disk_total_bytes"]
    )
    assert "cvunet_data_bytes" not in before  # never measured: absent, not 0

    def measured() -> dict | None:
        metrics = scraped(client)
        return metrics if "cvunet_data_bytes" in metrics else None

    started = time.time()
    expire(settings)  # nothing to expire: the sweep still measures, in the background
    after = support.wait_for(measured, 10, "the data size never reached /metrics")
    assert after["cvunet_data_bytes"] == 1000 + 2345 + 678
    assert started <= after["cvunet_data_bytes_measured_timestamp_seconds"] <= time.time()
