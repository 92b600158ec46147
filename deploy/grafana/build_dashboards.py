"""Generate the Grafana dashboards in deploy/grafana/dashboards/ (run from the repo root).

Why generated: about forty panels share the same datasource, units and layout
rules; writing them as data here keeps every PromQL expression in one readable
list, and the committed JSON is what Grafana provisions (a test checks the two
agree: ``python deploy/grafana/build_dashboards.py --check``). Queries use only
the metric names in stream/observability/metrics.py.

Grafana variables used in expressions: ``$__rate_interval`` (Grafana's
scrape-aware rate window) and, in the drill-down, ``$topic``, ``$partition``,
``$output_topic`` and ``$instance`` (regex matchers, multi-select, "All" = ``.*``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    mappings: tuple[dict[str, Any], ...] = field(default=())


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def p(title: str, *targets: Target, **options: Any) -> Panel:
    return Panel(title, targets, **options)


def t(expr: str, legend: str = "") -> Target:
    return Target(" ".join(expr.split()), legend)


def quantiles(metric: str, by: str = "", legend_prefix: str = "") -> tuple[Target, ...]:
    group = f"le, {by}" if by else "le"
    label = f"{{{{{by}}}}} " if by else legend_prefix
    return tuple(
        t(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"{label}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


BREAKER_STATES = (
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green"},
            "1": {"text": "half-open", "color": "yellow"},
            "2": {"text": "open", "color": "red"},
        },
    },
)

ERROR_RATIO = f"""
(
    (sum(rate(stream_events_rejected_total[{RATE}])) or vector(0))
  + (sum(rate(stream_errors_total[{RATE}])) or vector(0))
)
/ (sum(rate(stream_events_consumed_total[{RATE}])) > 0)
"""

LAG_PER_PARTITION = "max by (topic, partition) (stream_consumer_lag)"

#: For series that exist only once something happened whose label values cannot be
#: known up front (an error class, a retried operation, a configured breaker): a healthy
#: pipeline shows 0 instead of "No data". Series with known labels are exported at zero
#: by the worker instead (stream/runner.py).
NO_SERIES_IS_ZERO = "or vector(0)"

OVERVIEW = (
    Row(
        "Throughput",
        (
            p(
                "Consumed events/s",
                t(f"sum(rate(stream_events_consumed_total[{RATE}]))", "consumed"),
                kind="stat",
                unit="ops",
                width=6,
                height=4,
            ),
            p(
                "Produced records/s",
                t(f"sum(rate(stream_events_produced_total[{RATE}]))", "produced"),
                kind="stat",
                unit="ops",
                width=6,
                height=4,
            ),
            p(
                "Error ratio",
                t(ERROR_RATIO, "errors"),
                kind="stat",
                unit="percentunit",
                width=6,
                height=4,
            ),
            p(
                "Total consumer lag",
                t(f"sum({LAG_PER_PARTITION})", "lag"),
                kind="stat",
                width=6,
                height=4,
            ),
            p(
                "Throughput per stage",
                t(f"sum by (stage) (rate(stream_events_processed_total[{RATE}]))", "{{stage}}"),
                unit="ops",
                description="Events that passed each stage per second.",
            ),
            p(
                "Consumed and produced per topic",
                t(
                    f"sum by (topic) (rate(stream_events_consumed_total[{RATE}]))",
                    "in {{topic}}",
                ),
                t(
                    f"sum by (topic) (rate(stream_events_produced_total[{RATE}]))",
                    "out {{topic}}",
                ),
                unit="ops",
            ),
        ),
    ),
    Row(
        "Errors and dead letters",
        (
            p(
                "Error ratio (rejected + errors) / consumed",
                t(ERROR_RATIO, "error ratio"),
                unit="percentunit",
                width=8,
                description="The StreamHighErrorRate alert fires above 5 % for 5 minutes.",
            ),
            p(
                "Rejected and errors by stage and class",
                t(
                    f"sum by (stage, error_class) (rate(stream_events_rejected_total[{RATE}]))",
                    "rejected {{stage}} {{error_class}}",
                ),
                t(
                    f"sum by (stage, error_class) (rate(stream_errors_total[{RATE}]))"
                    f" {NO_SERIES_IS_ZERO}",
                    "error {{stage}} {{error_class}}",
                ),
                unit="ops",
                width=8,
            ),
            p(
                "Dead-letter records/s by stage",
                t(f"sum by (stage) (rate(stream_dlq_records_total[{RATE}]))", "{{stage}}"),
                unit="ops",
                width=8,
            ),
            p(
                "Late events and degraded enrichment",
                t(f"sum by (rule) (rate(stream_late_events_total[{RATE}]))", "late {{rule}}"),
                t(f"sum(rate(stream_enrichment_degraded_total[{RATE}]))", "degraded"),
                unit="ops",
            ),
            p(
                "Retries by operation",
                t(
                    f"sum by (operation) (rate(stream_retries_total[{RATE}])) {NO_SERIES_IS_ZERO}",
                    "{{operation}}",
                ),
                unit="ops",
                description="Only external lookups and sinks retry; 0 when none is configured.",
            ),
        ),
    ),
    Row(
        "Latency",
        (
            p(
                "End-to-end latency (input append to output produce)",
                *quantiles("stream_end_to_end_latency_seconds"),
                unit="s",
                description="StreamEndToEndLatencyHigh fires when p99 stays above 2 s.",
            ),
            p(
                "Stage duration per batch",
                *quantiles("stream_stage_duration_seconds", by="stage"),
                unit="s",
            ),
            p(
                "Event-time lag (event time to processing)",
                *quantiles("stream_event_time_lag_seconds"),
                unit="s",
            ),
            p(
                "Records per batch",
                *quantiles("stream_batch_size"),
                t(
                    f"sum(rate(stream_batch_size_sum[{RATE}]))"
                    f" / sum(rate(stream_batch_size_count[{RATE}]))",
                    "mean",
                ),
            ),
        ),
    ),
    Row(
        "Lag and scaling",
        (
            p(
                "Consumer lag per partition",
                t(LAG_PER_PARTITION, "{{topic}}/{{partition}}"),
                description="Max over reporting workers: during a rebalance two may report one "
                "partition.",
            ),
            p(
                "Replicas vs partitions",
                t("sum(stream_worker_ready)", "ready replicas"),
                t("count(stream_worker_ready)", "running replicas"),
                t(
                    "count(count by (topic, partition) (stream_consumer_lag))",
                    "input partitions",
                ),
                t("sum(stream_assigned_partitions)", "assigned partitions"),
                description="Replicas beyond the partition count sit idle (KEDA caps "
                "maxReplicaCount at the partition count).",
            ),
            p(
                "Assigned and paused partitions per worker",
                t("sum by (instance) (stream_assigned_partitions)", "assigned {{instance}}"),
                t("sum by (instance) (stream_paused_partitions)", "paused {{instance}}"),
            ),
            p(
                "Rebalances",
                t(f"sum by (kind) (increase(stream_rebalances_total[{RATE}]))", "{{kind}}"),
            ),
        ),
    ),
    Row(
        "Resilience",
        (
            p(
                "Circuit breaker state",
                t(
                    f"max by (breaker) (stream_circuit_breaker_state) {NO_SERIES_IS_ZERO}",
                    "{{breaker}}",
                ),
                kind="state-timeline",
                mappings=BREAKER_STATES,
                description="Breakers guard external lookups and sinks; with none configured the "
                "panel shows one closed (0) series.",
            ),
            p(
                "Circuit breaker transitions",
                t(
                    "sum by (breaker, to_state) "
                    f"(increase(stream_circuit_breaker_transitions_total[{RATE}])) "
                    f"{NO_SERIES_IS_ZERO}",
                    "{{breaker}} to {{to_state}}",
                ),
            ),
        ),
    ),
    Row(
        "Window state and checkpoints",
        (
            p(
                "Window state keys by rule",
                t("sum by (rule) (stream_window_state_keys)", "{{rule}}"),
                width=8,
            ),
            p(
                "Window state bytes per worker",
                t("sum by (instance) (stream_window_state_bytes)", "{{instance}}"),
                unit="bytes",
                width=8,
            ),
            p(
                "Window key-cap refusals",
                t(
                    f"sum by (rule) (rate(stream_window_state_cap_hits_total[{RATE}]))",
                    "{{rule}}",
                ),
                unit="ops",
                width=8,
            ),
            p(
                "Checkpoint and commit duration",
                *quantiles("stream_checkpoint_duration_seconds", legend_prefix="checkpoint "),
                t(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(stream_commit_duration_seconds_bucket[{RATE}])))",
                    "commit p99",
                ),
                unit="s",
                width=8,
            ),
            p(
                "Checkpoints by outcome",
                t(f"sum by (outcome) (rate(stream_checkpoints_total[{RATE}]))", "{{outcome}}"),
                unit="ops",
                width=8,
            ),
            p(
                "Correlations emitted by rule",
                t(
                    f"sum by (rule) (rate(stream_correlations_emitted_total[{RATE}]))",
                    "{{rule}}",
                ),
                unit="ops",
                width=8,
            ),
        ),
    ),
    Row(
        "Workers",
        (
            p(
                "Seconds since the poll loop last turned",
                t(
                    "time() - max by (instance) (stream_last_poll_timestamp_seconds)",
                    "{{instance}}",
                ),
                unit="s",
            ),
            p(
                "Versions running",
                t("count by (version) (stream_build_info)", "{{version}}"),
                kind="table",
            ),
        ),
    ),
)

LAG_SELECTED = 'stream_consumer_lag{topic=~"$topic", partition=~"$partition"}'
INSTANCE = 'instance=~"$instance"'

DRILLDOWN = (
    Row(
        "Partitions of $topic",
        (
            p(
                "Lag per partition",
                t(f"max by (partition) ({LAG_SELECTED})", "p{{partition}}"),
            ),
            p(
                "Lag drain rate per partition (negative = falling behind)",
                t(f"-max by (partition) (deriv({LAG_SELECTED}[5m]))", "p{{partition}}"),
                unit="ops",
            ),
            p(
                "Partition ownership (worker per partition)",
                t(f"max by (partition, instance) ({LAG_SELECTED})", "p{{partition}} {{instance}}"),
                kind="table",
                description="Which worker reports each selected partition, with its lag.",
            ),
            p(
                "Consumed from $topic per worker",
                t(
                    'sum by (instance) (rate(stream_events_consumed_total{topic=~"$topic"}'
                    f"[{RATE}]))",
                    "{{instance}}",
                ),
                unit="ops",
                description="Throughput is counted per topic and worker, not per partition.",
            ),
        ),
    ),
    Row(
        "Output topics",
        (
            p(
                "Produced to $output_topic",
                t(
                    'sum by (topic) (rate(stream_events_produced_total{topic=~"$output_topic"}'
                    f"[{RATE}]))",
                    "{{topic}}",
                ),
                unit="ops",
                width=24,
            ),
        ),
    ),
    Row(
        "Data quality",
        (
            p(
                "Schema rejections by field and reason",
                t(
                    "topk(10, sum by (field, reason) "
                    f"(rate(stream_validation_failures_total{{{INSTANCE}}}[{RATE}])))",
                    "{{field}}: {{reason}}",
                ),
                unit="ops",
                description="Records the pipeline's schema rejected (array indices folded to []).",
            ),
            p(
                "Optional fields present (share of events)",
                t(
                    f"min by (field) (stream_field_presence_ratio{{{INSTANCE}}})",
                    "{{field}}",
                ),
                unit="percentunit",
                description="Sampled from each worker's last batch; a drop means producers "
                "stopped sending a field.",
            ),
            p(
                "Records replayed per partition after a rebalance or restart (p99 since start)",
                t(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(stream_replayed_records_bucket{{{INSTANCE}}}))",
                    "p99",
                ),
                description="at_least_once: records between the last commit and what the "
                "previous owner had processed (a lower bound).",
            ),
            p(
                "Offsets reset (committed offset out of range)",
                t(
                    "sum by (topic, partition) "
                    f"(increase(stream_offsets_reset_total{{{INSTANCE}}}[{RATE}])) "
                    f"{NO_SERIES_IS_ZERO}",
                    "{{topic}} [{{partition}}]",
                ),
                description="The committed offset was no longer on the broker (retention "
                "deleted unconsumed records) and auto.offset.reset moved the partition: "
                "records in between were skipped (earliest) or never read (latest). No "
                "reset yet: one 0 series.",
            ),
            p(
                "Valid events dropped by a join (missing: drop)",
                t(
                    f"sum by (stage) (rate(stream_events_dropped_total{{{INSTANCE}}}[{RATE}]))",
                    "{{stage}}",
                ),
                unit="ops",
                width=24,
            ),
        ),
    ),
    Row(
        "Workers ($instance)",
        (
            p(
                "Ready",
                t(f"max by (instance) (stream_worker_ready{{{INSTANCE}}})", "{{instance}}"),
                kind="state-timeline",
                width=8,
            ),
            p(
                "Assigned and paused partitions",
                t(
                    f"sum by (instance) (stream_assigned_partitions{{{INSTANCE}}})",
                    "assigned {{instance}}",
                ),
                t(
                    f"sum by (instance) (stream_paused_partitions{{{INSTANCE}}})",
                    "paused {{instance}}",
                ),
                width=8,
            ),
            p(
                "Batches in the agent chain (at max_inflight_batches: the chain is the bottleneck)",
                t(
                    f"max by (instance) (stream_batches_in_flight{{{INSTANCE}}})",
                    "{{instance}}",
                ),
                width=8,
            ),
            p(
                "Seconds since last poll",
                t(
                    "time() - max by (instance) "
                    f"(stream_last_poll_timestamp_seconds{{{INSTANCE}}})",
                    "{{instance}}",
                ),
                unit="s",
                width=8,
            ),
            p(
                "Stage duration p99 per worker",
                t(
                    "histogram_quantile(0.99, sum by (le, instance, stage) "
                    f"(rate(stream_stage_duration_seconds_bucket{{{INSTANCE}}}[{RATE}])))",
                    "{{instance}} {{stage}}",
                ),
                unit="s",
            ),
            p(
                "Checkpoint duration p99 per worker",
                t(
                    "histogram_quantile(0.99, sum by (le, instance) "
                    f"(rate(stream_checkpoint_duration_seconds_bucket{{{INSTANCE}}}[{RATE}])))",
                    "{{instance}}",
                ),
                unit="s",
            ),
            p(
                "Garbage-collector pause p99 per worker",
                # No collection in the interval (the young threshold is high: a live worker
                # may go minutes without one) makes the quantile NaN: show 0 instead.
                t(
                    "(histogram_quantile(0.99, sum by (le, instance, generation) "
                    f"(rate(stream_gc_pause_seconds_bucket{{{INSTANCE}}}[{RATE}]))) >= 0) "
                    "or (0 * sum by (instance, generation) "
                    f"(rate(stream_gc_pause_seconds_count{{{INSTANCE}}}[{RATE}])))",
                    "{{instance}} gen {{generation}}",
                ),
                unit="s",
            ),
            p(
                "Window state bytes",
                t(f"sum by (instance) (stream_window_state_bytes{{{INSTANCE}}})", "{{instance}}"),
                unit="bytes",
            ),
            p(
                "Rebalances seen by the worker",
                t(
                    "sum by (instance, kind) "
                    f"(increase(stream_rebalances_total{{{INSTANCE}}}[{RATE}]))",
                    "{{instance}} {{kind}}",
                ),
            ),
        ),
    ),
)


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "Prometheus", "value": "prometheus"},
        "hide": 0,
    }


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "sort": 3,
        "current": {"text": ["All"], "value": ["$__all"]},
        "hide": 0,
    }


def render_panels(rows: tuple[Row, ...]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += row_height
                row_height = 0
            panels.append(render_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return panels


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.mappings:
        defaults["mappings"] = list(panel.mappings)
    rendered: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
                "range": panel.kind != "table",
                "instant": panel.kind == "table",
            }
            for index, target in enumerate(panel.targets)
        ],
    }
    if panel.description:
        rendered["description"] = panel.description
    if panel.kind == "timeseries":
        rendered["options"] = {"legend": {"displayMode": "table", "placement": "bottom"}}
    return rendered


def dashboard(
    uid: str, title: str, rows: tuple[Row, ...], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["stream-processor", "kafka"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["stream-processor"],
                "title": "Stream dashboards",
                "asDropdown": True,
            }
        ],
        "panels": render_panels(rows),
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model."""
    return {
        "stream-overview.json": dashboard(
            "stream-overview", "Stream pipeline overview", OVERVIEW, [datasource_variable()]
        ),
        "stream-drilldown.json": dashboard(
            "stream-drilldown",
            "Stream topic / partition drill-down",
            DRILLDOWN,
            [
                datasource_variable(),
                query_variable("topic", "Input topic", "label_values(stream_consumer_lag, topic)"),
                query_variable(
                    "partition",
                    "Partition",
                    'label_values(stream_consumer_lag{topic=~"$topic"}, partition)',
                ),
                query_variable(
                    "output_topic",
                    "Output topic",
                    "label_values(stream_events_produced_total, topic)",
                ),
                query_variable("instance", "Worker", "label_values(stream_worker_ready, instance)"),
            ],
        ),
    }


def serialise(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, model in dashboards().items():
        path = OUT_DIR / name
        text = serialise(model)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
