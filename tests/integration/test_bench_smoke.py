"""``stream bench`` end to end on a small input: every row runs to completion and its
outputs account for every input record; latency runs match every valid event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EVENTS = 20_000
ROWS = ["ceiling", "stream", "stream-x2", "quix", "faust-per-event"]

pytestmark = pytest.mark.broker


def test_bench_smoke_every_row_correct(kafka_bootstrap: str, tmp_path: Path) -> None:
    command = [
        # the console script, as `make bench` runs it: no PYTHONPATH, not from the checkout
        *(str(Path(sys.executable).with_name("stream")), "bench"),
        *("--events", str(EVENTS), "--partitions", "4"),
        *("--latency-seconds", "3", "--latency-rate", "5000"),
        # the per-event Faust peer needs the most time to start and stop: no latency run
        *("--latency-rows", "ceiling,stream,quix"),
        *("--timeout", "120", "--results-dir", str(tmp_path), "--json"),
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    document = json.loads(result.stdout)
    saved = list(tmp_path.glob("bench-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text()) == document

    source = document["input"]
    assert (source["events"], source["partitions"]) == (EVENTS, 4)
    assert source["valid"] + source["invalid"] == EVENTS
    assert source["invalid"] > 0

    rows = {row["name"]: row for row in document["rows"]}
    assert list(rows) == ROWS
    for name, row in rows.items():
        assert (row["status"], row["ok"], row["events"]) == ("ok", True, EVENTS), (name, row)
        assert row["events_per_s"] > 0 and row["cpu_seconds_per_million"] > 0, name
        assert row["peak_rss_mb"] > 0, name
    assert rows["ceiling"]["outputs"] == {"copied": EVENTS}
    for name in ROWS[1:]:
        outputs = rows[name]["outputs"]
        assert outputs["enriched"] == source["valid"], name
        assert outputs["dlq"] == source["invalid"], name

    for name in ("ceiling", "stream", "quix"):
        latency = rows[name]["latency_ms"]
        assert latency is not None, (name, rows[name]["latency_note"])
        assert latency["sent"] == 15_000
        assert latency["matched"] == latency["expected"] > 14_000, name
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"], name
    assert rows["faust-per-event"]["latency_ms"] is None
