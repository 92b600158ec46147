"""Grafana dashboards: every panel query parses, returns data and uses real metric names.

``dashboard_queries()`` is the one place that lists every panel expression (with
Grafana's variables substituted); other tests (e.g. a real Prometheus scraping a
real worker) reuse it. Parsing and evaluation use promtool: each query becomes a
``promql_expr_test`` over synthetic series shaped like the worker's /metrics,
asserting it yields at least one non-NaN sample.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from stream.observability.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"

#: What Grafana substitutes for its variables when the test evaluates a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$topic": ".*",
    "$partition": ".*",
    "$output_topic": ".*",
    "$instance": ".*",
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # dashboard uid
    panel: str  # panel title
    ref_id: str
    expr: str  # as stored in the dashboard, Grafana variables included
    promql: str  # variables substituted: plain PromQL any Prometheus can evaluate


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    values = GRAFANA_VARIABLES if variables is None else variables
    # Longest names first so "$partition" is not cut by a shorter prefix.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


def dashboard_queries(variables: dict[str, str] | None = None) -> list[PanelQuery]:
    """Every panel target of every dashboard JSON under deploy/grafana/dashboards."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        model = json.loads(path.read_text())
        for panel in _all_panels(model["panels"]):
            for target in panel.get("targets", []):
                expr = target["expr"]
                queries.append(
                    PanelQuery(
                        model["uid"],
                        panel["title"],
                        target["refId"],
                        expr,
                        substitute(expr, variables),
                    )
                )
    return queries


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_all_panels(panel.get("panels", [])))
    return found


def require_tool(name: str) -> str:
    """Path of a CLI tool; fail under CI when it is missing, skip otherwise."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    message = f"{name} not installed (apt-get install prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message)


def exported_metric_names() -> set[str]:
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def _counter(name: str, labels: str, per_step: float) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": f"0+{per_step}x60"}


def _gauge(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": values}


def _histogram(name: str, labels: str, buckets: tuple[str, ...]) -> list[dict[str, str]]:
    # Cumulative bucket counts: each bucket gets 10 more observations per step.
    prefix = f"{labels}," if labels else ""
    series = [
        _counter(f"{name}_bucket", f'{prefix}le="{le}"', 10 * (index + 1))
        for index, le in enumerate((*buckets, "+Inf"))
    ]
    count = 10 * (len(buckets) + 1)
    series.append(_counter(f"{name}_count", labels, count))
    series.append(_counter(f"{name}_sum", labels, count * 0.01))
    return series


def synthetic_series() -> list[dict[str, str]]:
    """Two workers' worth of every metric, 15 s apart for 15 minutes."""
    w1, w2 = 'instance="w1:6066"', 'instance="w2:6066"'
    series = [
        _counter("stream_events_consumed_total", f'{w1},topic="events"', 1500),
        _counter("stream_events_consumed_total", f'{w2},topic="events"', 1500),
        _counter("stream_events_consumed_total", f'{w1},topic="reference.services"', 1),
        _counter("stream_events_produced_total", f'{w1},topic="events.enriched"', 1400),
        _counter("stream_events_produced_total", f'{w1},topic="events.correlations"', 5),
        _counter("stream_events_produced_total", f'{w1},topic="events.dlq"', 10),
        _counter("stream_events_processed_total", f'{w1},stage="validate"', 1490),
        _counter("stream_events_processed_total", f'{w1},stage="enrich"', 1490),
        _counter("stream_events_processed_total", f'{w1},stage="correlate"', 1480),
        _counter("stream_events_rejected_total", f'{w1},stage="validate",error_class="schema"', 10),
        _counter("stream_errors_total", f'{w1},stage="produce",error_class="KafkaException"', 1),
        _counter("stream_dlq_records_total", f'{w1},stage="validate"', 10),
        _counter("stream_late_events_total", f'{w1},rule="burst"', 1),
        _counter("stream_correlations_emitted_total", f'{w1},rule="burst"', 5),
        _counter("stream_enrichment_degraded_total", w1, 2),
        _counter(
            "stream_validation_failures_total", f'{w1},field="items[].qty",reason="Expected"', 3
        ),
        _counter("stream_events_dropped_total", f'{w1},stage="enrich"', 1),
        _gauge("stream_field_presence_ratio", f'{w1},field="entity"', "0.5x60"),
        _counter("stream_retries_total", f'{w1},operation="lookup"', 1),
        _counter("stream_rebalances_total", f'{w1},kind="assigned"', 0.1),
        _counter("stream_checkpoints_total", f'{w1},outcome="committed"', 15),
        _counter(
            "stream_circuit_breaker_transitions_total",
            f'{w1},breaker="reference",to_state="open"',
            0.1,
        ),
        _counter("stream_window_state_cap_hits_total", f'{w1},rule="burst"', 1),
        _counter("stream_offsets_reset_total", f'{w1},topic="events",partition="0"', 0.1),
        _gauge("stream_consumer_lag", f'{w1},topic="events",partition="0"', "100+1x60"),
        _gauge("stream_consumer_lag", f'{w2},topic="events",partition="1"', "300-1x60"),
        _gauge("stream_assigned_partitions", w1, "1x60"),
        _gauge("stream_assigned_partitions", w2, "1x60"),
        _gauge("stream_paused_partitions", w1, "0x60"),
        _gauge("stream_batches_in_flight", w1, "1x30 4x30"),
        _gauge("stream_circuit_breaker_state", f'{w1},breaker="reference"', "0x30 2x30"),
        _gauge("stream_window_state_keys", f'{w1},rule="burst"', "1000x60"),
        _gauge("stream_window_state_bytes", w1, "2e6x60"),
        _gauge("stream_worker_ready", w1, "1x60"),
        _gauge("stream_worker_ready", w2, "0 1x59"),
        _gauge("stream_last_poll_timestamp_seconds", w1, "0+15x60"),
        _gauge("stream_build_info", f'{w1},version="0.1.0"', "1x60"),
    ]
    latency = ("0.005", "0.05", "0.5", "1", "5")
    series += _histogram("stream_stage_duration_seconds", f'{w1},stage="validate"', latency)
    series += _histogram("stream_end_to_end_latency_seconds", w1, latency)
    series += _histogram("stream_event_time_lag_seconds", w1, ("0.1", "1", "5"))
    series += _histogram("stream_batch_size", w1, ("100", "1000", "10000"))
    series += _histogram("stream_replayed_records", w1, ("0", "100", "1000"))
    series += _histogram("stream_checkpoint_duration_seconds", w1, latency)
    series += _histogram("stream_commit_duration_seconds", w1, latency)
    series += _histogram("stream_gc_pause_seconds", f'{w1},generation="2"', latency)
    return series


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_match_the_generator() -> None:
    assert _load_builder().main(["--check"]) == 0


def test_dashboards_are_the_expected_two() -> None:
    uids = {json.loads(path.read_text())["uid"] for path in DASHBOARDS.glob("*.json")}
    assert uids == {"stream-overview", "stream-drilldown"}
    assert len(dashboard_queries()) >= 60


def test_every_query_uses_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for query in dashboard_queries():
        used = set(re.findall(r"\bstream_[a-z_]+\b", query.promql))
        assert used, query
        assert used <= exported, (query.panel, used - exported)


def test_every_metric_family_has_a_panel() -> None:
    used = " ".join(query.promql for query in dashboard_queries())
    unused = [
        family.name
        for family in REGISTRY.collect()
        if not re.search(rf"\b{family.name}(_[a-z]+)?\b", used)
    ]
    assert unused == []


def test_no_unsubstituted_variables_remain() -> None:
    for query in dashboard_queries():
        assert "$" not in query.promql, query


def test_every_query_evaluates_to_data(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    queries = dashboard_queries()
    document = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "name": "dashboard queries return data",
                "interval": "15s",
                "input_series": synthetic_series(),
                "promql_expr_test": [
                    {
                        # `x == x` drops NaN samples: an empty histogram_quantile must fail.
                        "expr": f"clamp_max(count(({query.promql}) == ({query.promql})), 1)",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for query in queries
                ],
            }
        ],
    }
    test_file = tmp_path / "dashboard_test.yml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_overview_has_the_required_panels() -> None:
    by_panel: dict[str, list[str]] = {}
    for query in dashboard_queries():
        if query.dashboard == "stream-overview":
            by_panel.setdefault(query.panel, []).append(query.expr)
    latency = by_panel["End-to-end latency (input append to output produce)"]
    assert [re.match(r"histogram_quantile\((0\.\d+),", expr).group(1) for expr in latency] == [  # type: ignore[union-attr]
        "0.5",
        "0.95",
        "0.99",
    ]
    assert all("stream_end_to_end_latency_seconds_bucket" in expr for expr in latency)
    assert "count(stream_worker_ready)" in by_panel["Replicas vs partitions"]
    assert "sum(stream_worker_ready)" in by_panel["Replicas vs partitions"]
    for title in (
        "Throughput per stage",
        "Consumed and produced per topic",
        "Error ratio (rejected + errors) / consumed",
        "Dead-letter records/s by stage",
        "Consumer lag per partition",
        "Circuit breaker state",
        "Window state keys by rule",
        "Window state bytes per worker",
        "Checkpoint and commit duration",
        "Rebalances",
    ):
        assert title in by_panel


def test_drilldown_is_templated_by_topic_and_partition() -> None:
    model = json.loads((DASHBOARDS / "stream-drilldown.json").read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert set(variables) == {"datasource", "topic", "partition", "output_topic", "instance"}
    assert variables["partition"]["definition"] == (
        'label_values(stream_consumer_lag{topic=~"$topic"}, partition)'
    )
    exprs = [q.expr for q in dashboard_queries() if q.dashboard == "stream-drilldown"]
    for name in ("$topic", "$partition", "$output_topic", "$instance"):
        assert any(name in expr for expr in exprs), name


def test_provisioning_points_at_the_dashboards_and_datasource() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "stream.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for path in DASHBOARDS.glob("*.json"):
        model = json.loads(path.read_text())
        datasource = model["templating"]["list"][0]
        assert datasource["current"]["value"] == "prometheus"
        ids = [panel["id"] for panel in _all_panels(model["panels"])]
        assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
