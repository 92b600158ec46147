"""Per-record cost of each input format, end to end through one worker.

For each format: fresh topics, N events of the bundled pipeline produced beforehand with
``stream loadgen --format <format>`` (schemas registered under ``<topic>-value``), then
one ``stream worker`` (the bundled pipeline plus ``format: <format>`` and
``output_format: <--output-format>``) drains them. The
clock and the worker's CPU time (``/proc/<pid>/stat``, all threads) are read when the
worker has consumed its first events and when its last enriched record is produced, so
start-up is not counted. Output format JSON; no other load should run meanwhile.

    .venv/bin/python -m benchmarks.format_throughput --count 300000
    .venv/bin/python -m benchmarks.format_throughput --formats json,avro --json
    .venv/bin/python -m benchmarks.format_throughput --formats avro --output-format avro

Needs a broker (``--bootstrap``, default ``$STREAM_BOOTSTRAP_SERVERS`` or 127.0.0.1:9092)
and a registry (``--registry-url``, default ``$STREAM_SCHEMA_REGISTRY_URL``; without one a
local registry is started for the run with :mod:`stream.registry` and stopped after).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("json", "avro", "protobuf", "json_schema")
OUTPUT_FORMATS = ("json", "avro", "json_schema")
_NULLABLE = {"default": None}
#: ``--output-format avro``: the bundled pipeline's enriched records.
ENRICHED_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "EnrichedEvent",
    "namespace": "stream.bench",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "timestamp", "type": ["long", "string"]},
        {"name": "type", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "severity", "type": "string"},
        {"name": "entity", "type": ["null", "string"], **_NULLABLE},
        {"name": "value", "type": ["null", "double"], **_NULLABLE},
        {"name": "trace_id", "type": ["null", "string"], **_NULLABLE},
        {
            "name": "attributes",
            "type": ["null", {"type": "map", "values": ["string", "double", "boolean"]}],
            **_NULLABLE,
        },
        {"name": "event_time_ms", "type": "long"},
        {
            "name": "enrichment",
            "type": {
                "type": "record",
                "name": "Enrichment",
                "fields": [
                    {"name": "known_service", "type": "boolean"},
                    {"name": "team", "type": ["null", "string"], **_NULLABLE},
                    {"name": "tier", "type": ["null", "long"], **_NULLABLE},
                    {"name": "owner", "type": ["null", "string"], **_NULLABLE},
                    {"name": "score", "type": ["null", "double"], **_NULLABLE},
                ],
            },
        },
    ],
}
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def metric(port: int, name: str, labels: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            body = answer.read().decode()
    except OSError:
        return 0.0
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_format(
    fmt: str,
    count: int,
    partitions: int,
    bootstrap: str,
    registry_url: str,
    work: Path,
    output_format: str = "json",
) -> dict[str, Any]:
    prefix = f"fmt{uuid.uuid4().hex[:8]}"
    topics = {
        "input": f"{prefix}.events",
        "enriched": f"{prefix}.enriched",
        "correlations": f"{prefix}.correlations",
        "dlq": f"{prefix}.dlq",
        "reference": f"{prefix}.reference",
    }
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "STREAM_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_GROUP_ID": f"{prefix}-workers",
            "STREAM_APP_ID": f"{prefix}-app",
            "STREAM_LOG_FORMAT": "text",
            "STREAM_HOME": str(work),
            # Late events to the DLQ, as every release so far did (not a format matter).
            "STREAM_CORRELATE__LATE_POLICY": "dlq",
            **{f"STREAM_TOPICS__{k.upper()}": v for k, v in topics.items()},
        }
    )
    stream = [sys.executable, "-m", "stream.cli"]
    subprocess.run(
        [*stream, "topics", "create", "--partitions", str(partitions)],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *stream,
            "loadgen",
            "--topic",
            topics["input"],
            "--count",
            str(count),
            "--format",
            fmt,
            "--registry-url",
            registry_url,
            "--seed-reference",
            "--reference-topic",
            topics["reference"],
            "--start-time",
            str(int(time.time() * 1000) - 600_000),
            "--no-progress",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    pipeline = work / f"{prefix}.yaml"
    spec: dict[str, Any] = {"format": fmt, "output_format": output_format}
    if fmt != "json" or output_format != "json":
        spec["schema_registry"] = {"url": registry_url}
    if output_format == "avro":
        (work / f"{prefix}.avsc").write_text(json.dumps(ENRICHED_AVRO))
        spec["output_schema_file"] = f"{prefix}.avsc"
    pipeline.write_text(json.dumps(spec))  # JSON is YAML
    port = free_port()
    log = open(work / f"{prefix}.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [*stream, "worker", "--web-port", str(port), "--config", str(pipeline)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    consumed = 'topic="' + topics["input"] + '"'
    produced = 'topic="' + topics["enriched"] + '"'
    try:
        deadline = time.monotonic() + 600
        start: tuple[float, float, float] | None = None
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited; see {log.name}")
            if start is None:
                seen = metric(port, "stream_events_consumed_total", consumed)
                if seen > 0:
                    start = (time.monotonic(), cpu_seconds(worker.pid), seen)
            else:
                done = metric(port, "stream_events_produced_total", produced)
                if done >= count:
                    end = (time.monotonic(), cpu_seconds(worker.pid))
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"worker did not finish within 600 s; see {log.name}")
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
    measured = count - start[2]
    wall = end[0] - start[0]
    cpu = end[1] - start[1]
    return {
        "format": fmt,
        "output_format": output_format,
        "events": count,
        "measured_events": int(measured),
        "events_per_s": round(measured / wall),
        "cpu_s_per_million": round(cpu / measured * 1e6, 2),
        "wall_s": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--formats", default=",".join(FORMATS), help="input formats to run")
    parser.add_argument("--output-format", default="json", choices=OUTPUT_FORMATS)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("STREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--registry-url", default=os.environ.get("STREAM_SCHEMA_REGISTRY_URL"))
    parser.add_argument("--json", action="store_true", help="one JSON object per format")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = set(formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}")

    from stream import registry

    started_port = None
    work = Path(tempfile.mkdtemp(prefix="format-bench-"))
    url = args.registry_url
    if not url:
        from stream.localbroker import free_port_pair

        started_port = free_port_pair()
        url = registry.start(started_port, work, app=registry.ensure_distribution())
    try:
        rows = []
        for fmt in formats:
            row = run_format(
                fmt, args.count, args.partitions, args.bootstrap, url, work, args.output_format
            )
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(
                    f"{fmt:>11s} -> {args.output_format:11s} {row['events_per_s']:>9,} events/s "
                    f"{row['cpu_s_per_million']:>7.2f} CPU-s/M  "
                    f"({row['measured_events']:,} events in {row['wall_s']} s)",
                    flush=True,
                )
    finally:
        if started_port is not None:
            registry.stop(started_port, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
