"""The benchmark's outputs: the JSON document (with the machine it ran on) and the table.

The table is Markdown, readable on a terminal and pasted as is into
``benchmarks/README.md``. Ratios compare each row's events/s with the Quix and
Faust peers and with the ceiling, from the same run only. The last column names
the Kafka client each row ran: the peers run in their own environments
(``benchmarks.peers.envs``), so the product's client is not theirs.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness.rows import (
    CEILING,
    FAUST,
    OBSERVABILITY,
    ORDERS,
    QUIX,
    STREAM,
    STREAM_AVRO,
    STREAM_EOS,
    Row,
    row_label,
)

#: Targets the comparisons are reported against (issues 12 and 16).
ORDERS_TARGET_PERCENT = 75.0
EOS_TARGET_PERCENT = 70.0

SCHEMA_VERSION = 1


def machine_info(kafka_version: str | None, bootstrap: str, private_broker: bool) -> dict[str, Any]:
    """CPU, memory, software versions: what makes numbers comparable (or not)."""
    import confluent_kafka

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(_mem_total_bytes() / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka_version or "unknown (external broker)",
        "broker": "private local broker" if private_broker else f"external ({bootstrap})",
        # the product's environment (the ceiling and stream rows); each row's own
        # client versions are in its "clients"
        "confluent_kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "faust": _version("faust-streaming"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def write_document(document: dict[str, Any], results_dir: Path, started: datetime) -> Path:
    """Write ``bench-<UTC timestamp>.json`` into ``results_dir``; its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- table ----------------------------------------------------------------------------------

HEADER = (
    "row",
    "events/s",
    "x quix",
    "x faust",
    "% of ceiling",
    "% of stream",
    "CPU s / M events",
    "peak RSS MB",
    "p50 ms",
    "p99 ms",
    "status",
    "client",
)
_RIGHT = frozenset(range(1, 10))


def render_table(rows: Sequence[Row]) -> str:
    """One table; ``% of ceiling`` against the ceiling of the row's own workload (input),
    ``% of stream`` against the observability ``stream`` row of the same run."""
    rates = {r.name: r.events_per_s for r in rows if r.ok and r.events_per_s}
    lines = [_cells(row, rates) for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(HEADER)]

    def fmt(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in _RIGHT else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in _RIGHT else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([fmt(HEADER), rule, *(fmt(c) for c in lines)])


def _cells(row: Row, rates: Mapping[str, float]) -> list[str]:
    rate = row.events_per_s if row.ok else None
    latency = row.latency
    return [
        row.name,
        _number(rate),
        _ratio(rate, rates.get(QUIX)),
        _ratio(rate, rates.get(FAUST)),
        _percent(rate, rates.get(row_label(row.workload, CEILING))),
        _percent(rate, rates.get(STREAM)) if row.system != CEILING else "—",
        _number(row.cpu_seconds_per_million if row.ok else None, 1),
        _number(row.peak_rss_mb if row.ok else None),
        _number(latency.p50_ms if latency else None, 1),
        _number(latency.p99_ms if latency else None, 1),
        row.status,
        client_text(row.clients),
    ]


def client_text(clients: Mapping[str, str]) -> str:
    """The Kafka client a row ran, short: ``confluent-kafka 2.16.1 / librdkafka 2.16.0``,
    ``aiokafka 0.14.0``, ``kafka-clients 4.3.1`` (framework versions are in the JSON)."""
    if "aiokafka" in clients:  # Faust's transport (its confluent-kafka only creates a topic)
        return f"aiokafka {clients['aiokafka']}"
    if "librdkafka" in clients:
        python_client = clients.get("confluent-kafka", "?")
        return f"confluent-kafka {python_client} / librdkafka {clients['librdkafka']}"
    if "kafka-clients" in clients:
        return f"kafka-clients {clients['kafka-clients']}"
    return ", ".join(f"{k} {v}" for k, v in clients.items()) or "—"


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "—" if not value or not base else f"{value / base:.1f}x"


def _percent(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "—"
    share = 100 * value / base
    return f"{share:.1f}%" if share < 10 else f"{share:.0f}%"


def render_notes(rows: Sequence[Row]) -> str:
    """One line per remark: failures, skipped latency, replays."""
    lines = []
    for row in rows:
        for note in row.notes:
            lines.append(f"- {row.name}: {note}")
        if row.latency_note:
            lines.append(f"- {row.name} latency: {row.latency_note}")
        if row.latency is not None:
            lat = row.latency
            lines.append(
                f"- {row.name} latency: {lat.matched:,} events matched at "
                f"{lat.achieved_rate:,.0f}/s offered; p95 {lat.p95_ms:,.1f} ms, "
                f"max {lat.max_ms:,.1f} ms; {latency_summary(lat)}"
            )
    lines += [f"- {c['text']}" for c in comparisons(rows)]
    return "\n".join(lines)


def latency_summary(lat: Any) -> str:
    """p99 over the whole run, over the steady part, and the worst second (by its p99)."""
    worst = max(lat.timeline, key=lambda s: s["p99"]) if lat.timeline else None
    steady = "—" if lat.steady_p99_ms is None else f"{lat.steady_p99_ms:,.0f} ms"
    text = f"p99 whole run {lat.p99_ms:,.0f} ms, steady (after 2 s) {steady}"
    if worst is not None:
        text += f", worst second t={worst['t']:g}s (p99 {worst['p99']:,.0f} ms)"
    return text


def comparisons(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The run's ratios against the observability ``stream`` row (same run only): the
    orders workload (target >= 75%), exactly-once (target >= 70%) and Avro input (the
    per-record cost of the format: no target)."""
    by_name = {r.name: r for r in rows}
    base = by_name.get(STREAM)
    out: list[dict[str, Any]] = []
    if base is None or not base.ok or not base.events_per_s:
        return out
    for name, target in (
        (row_label(ORDERS, STREAM), ORDERS_TARGET_PERCENT),
        (STREAM_EOS, EOS_TARGET_PERCENT),
        (row_label(ORDERS, STREAM_EOS), None),
        (STREAM_AVRO, None),
    ):
        row = by_name.get(name)
        if row is None or not row.ok or not row.events_per_s:
            continue
        percent = 100 * row.events_per_s / base.events_per_s
        cpu, base_cpu = row.cpu_seconds_per_million, base.cpu_seconds_per_million
        cpu_text = (
            f"; CPU s/M {cpu:,.1f} vs {base_cpu:,.1f} ({100 * base_cpu / cpu:.0f}% by CPU)"
            if cpu and base_cpu
            else ""
        )
        by_cpu = 100 * base_cpu / cpu if cpu and base_cpu else None
        if target is None:
            target_text = ""
        else:
            # on a busy machine events/s swings with other load; CPU per event is steadier
            verdicts = [f"by events/s {'met' if percent >= target else 'missed'}"]
            if by_cpu is not None:
                verdicts.append(f"by CPU {'met' if by_cpu >= target else 'missed'}")
            target_text = f" (target >= {target:.0f}%: {', '.join(verdicts)})"
        out.append(
            {
                "row": name,
                "base": STREAM,
                "workload": OBSERVABILITY if name in (STREAM_EOS, STREAM_AVRO) else ORDERS,
                "percent_of_stream": round(percent, 1),
                "percent_of_stream_by_cpu": (
                    round(100 * base_cpu / cpu, 1) if cpu and base_cpu else None
                ),
                "target_percent": target,
                "met": None if target is None else percent >= target,
                "met_by_cpu": None if target is None or by_cpu is None else by_cpu >= target,
                "text": f"{name}: {row.events_per_s:,.0f} events/s = {percent:.0f}% of the "
                f"stream row's {base.events_per_s:,.0f}{target_text}{cpu_text}",
            }
        )
    return out
