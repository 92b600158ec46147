"""A real Prometheus scraping real workers: every Grafana panel query returns data.

The promtool test in test_deploy_dashboards.py evaluates the panel queries over
synthetic series shaped like /metrics. This one closes the remaining gap: two
``stream worker`` processes run the demo pipeline (short windows, so correlations,
late events and window state exist) under load from ``stream loadgen`` with some
invalid and late events; a real Prometheus scrapes them every second with the
production alert rules loaded. Then every panel expression (Grafana variables
substituted the way "All" does) must return at least one non-NaN sample from
Prometheus' HTTP API, and no alert may be firing — or even have its condition
true — except the ones this load is expected to trigger.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_deploy_dashboards import dashboard_queries, require_tool
from tests.support.pipeline import REPO, PipelineTopics, WorkerProcess, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

ALERT_RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DEMO_PIPELINE = REPO / "stream" / "pipelines" / "demo.yaml"
#: The ports this test may give Prometheus.
PORT_RANGE = range(47000, 48000)

LOAD_RATE = 3000  # events/s
LOAD_SECONDS = 40  # longer than the test needs: load is still flowing when queries run
#: Load time before the panel queries run: long enough for windows to close and for
#: every rate()/histogram_quantile() over Grafana's 1m rate interval to have samples.
OBSERVE_SECONDS = 25
INVALID_RATIO = 0.02
LATE_RATIO = 0.01
#: Alerts whose condition this load legitimately makes true: invalid and late events
#: go to the dead-letter topic continuously (the alert itself needs 15 minutes to fire).
EXPECTED_ALERTS = {"StreamDeadLetterQueueGrowing"}


def free_port_in(ports: range) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {ports.start}-{ports.stop - 1}")


class Prometheus:
    """A Prometheus server subprocess scraping the given targets every second."""

    def __init__(self, binary: str, workdir: Path, targets: list[str]) -> None:
        self.port = free_port_in(PORT_RANGE)
        rules = workdir / "alerts.yml"
        shutil.copy(ALERT_RULES, rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "stream-worker",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", (promql, data["resultType"])
        return list(data["result"])

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=1
                ) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=timeout, interval=0.2, message="prometheus ready")

    def targets_up(self, expected: int) -> bool:
        active = self.api("/api/v1/targets")["activeTargets"]
        return bool(sum(t["health"] == "up" for t in active) == expected)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def running(*workers: WorkerProcess) -> Iterator[None]:
    """Stop the workers with SIGTERM on the way out; each must exit cleanly."""
    try:
        yield
    finally:
        codes = [w.stop() for w in workers]
        logs = [w.log_path.read_text(errors="replace")[-4000:] for w in workers]
        assert codes == [0] * len(workers), "\n".join(logs)


@contextlib.contextmanager
def prometheus_server(binary: str, workdir: Path, targets: list[str]) -> Iterator[Prometheus]:
    prometheus = Prometheus(binary, workdir, targets)
    try:
        prometheus.wait_ready()
        yield prometheus
    finally:
        prometheus.stop()


@contextlib.contextmanager
def load_running(topics: PipelineTopics, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``stream loadgen`` at LOAD_RATE with invalid and late events, stopped on the way out."""
    command = [
        sys.executable,
        "-m",
        "stream.cli",
        "loadgen",
        "--bootstrap-servers",
        topics.bootstrap,
        "--topic",
        topics.input,
        "--rate",
        str(LOAD_RATE),
        "--duration",
        str(LOAD_SECONDS),
        "--invalid-ratio",
        str(INVALID_RATIO),
        "--late-ratio",
        str(LATE_RATIO),
        "--seed",
        "11",
        "--seed-reference",
        "--reference-topic",
        topics.reference,
        "--no-progress",
    ]
    with open(log_path, "wb") as log:
        load = subprocess.Popen(command, env=topics.env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield load
        finally:
            if load.poll() is None:
                load.terminate()
            try:
                load.wait(15)
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait()


def has_number(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_panel_query_returns_data_from_real_workers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    binary = require_tool("prometheus")
    queries = dashboard_queries()
    started = time.monotonic()

    topics = PipelineTopics(kafka_bootstrap, partitions=4).create()
    args = ["--config", str(DEMO_PIPELINE)]
    workers = [WorkerProcess(topics, tmp_path, args=args) for _ in range(2)]
    targets = [f"127.0.0.1:{w.port}" for w in workers]
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(*workers))
        prometheus = stack.enter_context(prometheus_server(binary, tmp_path, targets))
        for worker in workers:
            worker.wait_ready(timeout=60, partitions=False)
        load = stack.enter_context(load_running(topics, tmp_path / "loadgen.log"))
        wait_until(lambda: prometheus.targets_up(2), timeout=15, message="both targets up")
        time.sleep(OBSERVE_SECONDS)

        empty = [
            f"{q.dashboard} / {q.panel} / {q.ref_id}: {q.promql}"
            for q in queries
            if not has_number(prometheus.query(q.promql))
        ]
        firing = prometheus.query('ALERTS{alertstate="firing"}')
        pending = prometheus.query('ALERTS{alertstate="pending"}')
        # The rules evaluate every 30 s and wait minutes before firing, so also ask
        # directly which conditions hold under this load right now.
        conditions_true = {
            rule["alert"] for rule in alert_rules() if prometheus.query(rule["expr"])
        }
        assert load.poll() is None, "the load ran out before the queries"

    print(f"\n{len(queries)} panel queries evaluated after {time.monotonic() - started:.0f}s")
    for alert in pending + firing:
        labels = alert["metric"]
        print(f"alert {labels['alertname']}: {labels['alertstate']}")
    print(f"alert conditions true now: {sorted(conditions_true) or 'none'}")

    assert empty == [], "panel queries without data:\n" + "\n".join(empty)
    assert firing == []
    assert {a["metric"]["alertname"] for a in pending} <= EXPECTED_ALERTS
    assert conditions_true <= EXPECTED_ALERTS
