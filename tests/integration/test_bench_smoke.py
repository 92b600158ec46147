"""``stream bench`` end to end on a small input: every row runs to completion and its
outputs account for every input record; latency runs match every valid event. Both
workloads: the observability rows (peers included, and the exactly-once worker) and the
orders rows (ceiling, stream, stream-eos on ``stream/pipelines/orders.yaml`` with the
customer topic and the fx HTTP service the harness provides). ``--format avro`` adds the
``stream-avro`` row (the same events framed as Avro, a local schema registry started for
the run): about 10 s more here, checked like ``stream``.

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
ROWS = [
    "ceiling",
    "stream",
    "stream-avro",
    "stream-eos",
    "stream-x2",
    "quix",
    "faust-per-event",
    "kstreams",
]
ORDERS_ROWS = ["orders/ceiling", "orders/stream", "orders/stream-eos"]

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
        *("--workload", "all", "--no-plot", "--format", "avro"),
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
    assert list(rows) == ROWS + ORDERS_ROWS
    orders = {name: rows.pop(name) for name in ORDERS_ROWS}
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
    assert rows["stream-eos"]["detail"]["processing_guarantee"] == "exactly_once"
    avro = document["inputs"]["avro"]  # the same events (same seed), framed as Avro
    assert (avro["format"], avro["valid"], avro["invalid"]) == (
        "avro",
        source["valid"],
        source["invalid"],
    )
    assert rows["stream-avro"]["latency_ms"] is None

    # orders: own input (kinds of invalid orders), joins served by the harness, every
    # valid order enriched once with the right derived amount on a sample
    truth = document["inputs"]["orders"]
    assert truth["valid"] + truth["invalid"] == EVENTS and truth["invalid"] > 0
    assert len(truth["invalid_kinds"]) == 8
    assert 0 < sum(truth["fx_requests"].values()) <= 4 * 8 * 2  # cached per currency
    assert orders["orders/ceiling"]["outputs"] == {"copied": EVENTS}
    for name, row in orders.items():
        assert (row["status"], row["workload"]) == ("ok", "orders"), (name, row)
        assert row["events_per_s"] > 0 and row["cpu_seconds_per_million"] > 0, name
        if name != "orders/ceiling":
            assert row["outputs"]["enriched"] == truth["valid"], name
            assert row["outputs"]["dlq"] == truth["invalid"], name
            checked = row["detail"]["orders_checked"]
            assert checked["distinct_enriched"] == truth["valid"], name
            assert checked["sampled"] > 100 and checked["sample_errors"] == 0, name
    compared = {c["row"]: c for c in document["comparisons"]}
    assert {"orders/stream", "stream-eos", "stream-avro"} <= set(compared)
    assert "peers" in " ".join(document["notes"])

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
        if name == "quix" and latency is None:  # on a busy machine Quix may fall below 1.2x
            assert rows[name]["latency_note"].startswith("not measured: cannot sustain")
            continue
        assert latency is not None, (name, rows[name]["latency_note"])
        assert latency["sent"] == 15_000
        assert latency["matched"] == latency["expected"] > 14_000, name
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"], name
    assert rows["faust-per-event"]["latency_ms"] is None
