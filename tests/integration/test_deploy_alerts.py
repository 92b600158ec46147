"""Alert rules, their promtool unit tests, the Prometheus and Alertmanager configs.

promtool (Debian ``prometheus``) and amtool (Debian ``prometheus-alertmanager``)
do the validation, the same binaries operators run. Without them these tests
skip locally and fail under CI (``CI`` set), where .ci/run must install them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.observability.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "tests" / "alerts_test.yml"
ALERTMANAGER_DIR = ROOT / "deploy" / "alertmanager"
ALERTMANAGER = ALERTMANAGER_DIR / "alertmanager.yml"
RUNBOOKS = ROOT / "deploy" / "README.md"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def require_tool(name: str) -> str:
    """Path of a CLI tool; fail under CI when it is missing, skip otherwise."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    message = f"{name} not installed (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message)


def exported_metric_names() -> set[str]:
    """Every sample name /metrics can expose, from the metric catalogue."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_rules_pass_promtool_check() -> None:
    result = run(require_tool("promtool"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = run(require_tool("promtool"), "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_detect_a_broken_threshold(tmp_path: Path) -> None:
    # The unit tests must notice when a bound moves: raise the error-rate bound to 20 %.
    (tmp_path / "tests").mkdir()
    shutil.copy(ALERT_TESTS, tmp_path / "tests" / "alerts_test.yml")
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text().replace("> 0.05", "> 0.2"))
    result = run(require_tool("promtool"), "test", "rules", "tests/alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "alertname: StreamHighErrorRate, time: 12m" in result.stdout + result.stderr


def test_the_required_alerts_exist() -> None:
    assert [rule["alert"] for rule in alert_rules()] == [
        "StreamHighErrorRate",
        "StreamEndToEndLatencyHigh",
        "StreamThroughputLow",
        "StreamDeadLetterQueueGrowing",
        "StreamConsumerLagGrowing",
        "StreamCircuitBreakerOpen",
        "StreamNoWorkerReady",
    ]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_for_severity_annotations_and_a_runbook(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+m", rule["for"])
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["labels"]["service"] == "stream-processor"
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    anchor = annotations["runbook_url"].removeprefix("deploy/README.md#")
    assert anchor == rule["alert"].lower()
    headings = re.findall(r"^#+ (\S+)\s*$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    assert rule["alert"] in headings, f"deploy/README.md has no runbook heading {rule['alert']}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_exported_metrics(rule: dict[str, Any]) -> None:
    used = set(re.findall(r"\bstream_[a-z_]+\b", rule["expr"]))
    assert used, rule["expr"]
    assert used <= exported_metric_names(), used - exported_metric_names()


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names
    assert quiet == names


def test_prometheus_config_is_valid() -> None:
    result = run(
        require_tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_alertmanager_config_is_valid() -> None:
    result = run(require_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            ["severity=critical", "alertname=StreamNoWorkerReady"],
            "pagerduty-critical,slack-critical",
        ),
        (["severity=warning", "alertname=StreamDeadLetterQueueGrowing"], "slack-warnings"),
        (["severity=info"], "slack-warnings"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receivers: str) -> None:
    amtool = require_tool("amtool")
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_alertmanager_templates_render() -> None:
    amtool = require_tool("amtool")
    glob = str(ALERTMANAGER_DIR / "templates" / "*.tmpl")
    text = '{{ template "stream.title" . }}|{{ template "stream.text" . }}'
    result = run(amtool, "template", "render", f"--template.glob={glob}", f"--template.text={text}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Runbook:" in result.stdout


def test_alertmanager_holds_no_secret_values() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack
            assert slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
        for pagerduty in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pagerduty and "service_key" not in pagerduty
            assert pagerduty["routing_key_file"].startswith("/etc/alertmanager/secrets/")
    placeholders = sorted((ALERTMANAGER_DIR / "secrets").iterdir())
    assert [path.name for path in placeholders] == ["pagerduty_routing_key", "slack_api_url"]
    for path in placeholders:
        assert "replace" in path.read_text().lower(), f"{path} must stay a placeholder"
