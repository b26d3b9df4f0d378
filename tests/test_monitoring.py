"""Monitoring: Prometheus's configuration and alert rules, checked and unit-tested by promtool."""

from __future__ import annotations

import subprocess

import yaml

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
