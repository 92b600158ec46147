"""``stream bench`` end to end on a small input: every row runs to completion and its
outputs account for every input record; latency runs match every valid event.

The peers run from their own environments (virtual environments, the Kafka Streams jar),
built once per machine into ``$STREAM_HOME``: the test passes the session's so that the
bench, started in a temporary directory, finds them instead of building them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.peers import envs
from stream.localbroker.paths import HOME_ENV, resolve_home

EVENTS = 20_000
ROWS = ["ceiling", "stream", "stream-x2", "quix", "faust-per-event", "kstreams"]

pytestmark = pytest.mark.broker


def test_bench_smoke_every_row_correct(kafka_bootstrap: str, tmp_path: Path) -> None:
    try:
        envs.kstreams_env()
        kstreams = "ok"
    except envs.PeerUnavailable as exc:
        kstreams = "skipped" if exc.missing else "FAILED"
    command = [
        # the console script, as `make bench` runs it: no PYTHONPATH, not from the checkout
        *(str(Path(sys.executable).with_name("stream")), "bench"),
        *("--events", str(EVENTS), "--partitions", "4"),
        *("--latency-seconds", "3", "--latency-rate", "5000"),
        # the per-event Faust peer needs the most time to start and stop: no latency run
        *("--latency-rows", "ceiling,stream,quix,kstreams"),
        *("--timeout", "120", "--results-dir", str(tmp_path), "--json"),
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
            HOME_ENV: str(resolve_home()),
        },
        capture_output=True,
        text=True,
        timeout=420,
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
    if kstreams == "skipped":  # no Java or Maven here: a skipped row, not a crash
        assert rows.pop("kstreams")["status"] == "skipped"
    for name, row in rows.items():
        assert (row["status"], row["ok"], row["events"]) == ("ok", True, EVENTS), (name, row)
        assert row["events_per_s"] > 0 and row["cpu_seconds_per_million"] > 0, name
        assert row["peak_rss_mb"] > 0, name
    assert rows["ceiling"]["outputs"] == {"copied": EVENTS}
    for name in list(rows)[1:]:
        outputs = rows[name]["outputs"]
        assert outputs["enriched"] == source["valid"], name
        assert outputs["dlq"] == source["invalid"], name

    # which client each row ran: the product's for ceiling and stream, the peers' own
    product = rows["stream"]["clients"]
    assert set(product) == {"confluent-kafka", "librdkafka"}
    assert rows["ceiling"]["clients"] == product
    assert rows["quix"]["clients"]["quixstreams"]
    assert rows["faust-per-event"]["clients"]["aiokafka"]
    table = result.stderr
    assert f"confluent-kafka {product['confluent-kafka']}" in table
    if "kstreams" in rows:
        ks = rows["kstreams"]
        assert ks["clients"]["kafka-clients"] == ks["detail"]["kafka_streams"]
        assert f"kafka-clients {ks['clients']['kafka-clients']}" in table
        # one thread and two, each after its warm-up pass; the better one is the row
        attempts = ks["detail"]["attempts"]
        assert [a["threads"] for a in attempts] == [1, 2]
        assert all(a["status"] == "ok" and a["warmup"]["records"] == EVENTS for a in attempts)
        assert ks["events_per_s"] == max(a["events_per_s"] for a in attempts)
        latency = ks["latency_ms"]
        if latency is None:  # measured only if it sustained 1.2x the offered rate
            assert ks["latency_note"].startswith("not measured: cannot sustain"), ks
        else:
            assert latency["matched"] == latency["expected"] > 14_000

    for name in ("ceiling", "stream", "quix"):
        latency = rows[name]["latency_ms"]
        assert latency is not None, (name, rows[name]["latency_note"])
        assert latency["sent"] == 15_000
        assert latency["matched"] == latency["expected"] > 14_000, name
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"], name
    assert rows["faust-per-event"]["latency_ms"] is None
