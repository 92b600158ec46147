"""``stream sink postgres`` against the real broker and a real PostgreSQL.

* SIGKILL mid-run, restart: the table holds every valid event exactly once.
* PostgreSQL stopped mid-run: the sink pauses (breaker + retry ->
  backpressure), commits nothing it has not written, and finishes once the
  database is back.

Rows/s of the sink are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.postgres_sink import PostgresSink
from connectors.sink_runner import SinkRunner, SinkRunnerOptions
from stream.errors import TransientError
from stream.kafka import headers as h
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.resilience.retry import RetryPolicy
from tests.integration.postgres_fixture import PostgresServer, postgres_server, unique_table
from tests.support.pipeline import committed_offsets, end_offsets, produce, read_all, wait_until

__all__ = ["postgres_server"]  # the session fixture, imported for pytest

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000


def enriched(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "type": "login",
            "source": f"svc-{i % 30}",
            "timestamp": T0 + i,
            "severity": ("info", "error")[i % 2],
            "event_time_ms": T0 + i,
            "entity": f"user-{i % 100}",
            "value": i * 0.5,
            "attributes": {"region": "eu", "n": i},
            "enrichment": {"known_service": i % 3 != 0, "score": 2.0, "team": "core", "tier": 1},
        }
    ).encode()


def fill(bootstrap: str, topic: str, valid: int, invalid_every: int) -> int:
    """Produce ``valid`` enriched events plus an invalid record after every ``invalid_every``."""
    records: list[tuple[bytes | None, bytes]] = []
    bad = 0
    for i in range(valid):
        records.append((f"svc-{i % 30}".encode(), enriched(i)))
        if invalid_every and i % invalid_every == invalid_every - 1:
            records.append((None, b'{"event_id": "raw-only"}' if bad % 2 else b"{broken"))
            bad += 1
    produce(bootstrap, topic, records)
    return bad


def count(server: PostgresServer, table: str) -> int:
    try:
        return int(server.execute(f"SELECT count(*) FROM {table}")[0][0])
    except Exception:  # table not created yet
        return 0


def sink_process(
    bootstrap: str, server: PostgresServer, topic: str, dlq: str, table: str, *extra: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAM_BOOTSTRAP_SERVERS": bootstrap,
        # A killed member holds its partitions until its session times out: keep that short.
        "STREAM_KAFKA": json.dumps({"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "sink",
            "postgres",
            "--topic",
            topic,
            "--dlq-topic",
            dlq,
            "--dsn",
            server.dsn,
            "--table",
            table,
            "--group",
            f"g-{table}",
            "-q",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigkill_and_restart_leave_every_valid_event_exactly_once(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    postgres_server: PostgresServer,
) -> None:
    topic, dlq = topic_factory("pgsink", partitions=4), topic_factory("pgsink-dlq")
    valid = 60_000
    invalid = fill(kafka_bootstrap, topic, valid, invalid_every=200)
    table = unique_table("events")

    first = sink_process(
        kafka_bootstrap,
        postgres_server,
        topic,
        dlq,
        table,
        "--commit-every",
        "4000",
        "--commit-interval",
        "0.2",
    )
    try:
        wait_until(
            lambda: count(postgres_server, table) >= 12_000,
            timeout=120,
            interval=0.05,
            message="first rows written",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    written_before_kill = count(postgres_server, table)
    committed = sum(committed_offsets(kafka_bootstrap, f"g-{table}", topic).values())
    assert 0 < written_before_kill < valid
    assert committed <= written_before_kill + invalid  # offsets never run ahead of the table

    second = sink_process(kafka_bootstrap, postgres_server, topic, dlq, table, "--stop-at-end")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    rate = re.search(r"\(([\d,]+) records/s\)", out)
    print(f"\npostgres sink restart: {out.strip()}")
    assert rate is not None

    rows = postgres_server.execute(
        f"SELECT count(*), count(DISTINCT event_id), min(event_time), sum(tier) FROM {table}"
    )[0]
    assert rows[0] == rows[1] == valid
    assert rows[3] == valid
    sample = postgres_server.execute(
        f"SELECT source, severity, value, attributes->>'n', known_service, team, degraded "
        f"FROM {table} WHERE event_id = 'e7'"
    )
    assert sample == [("svc-7", "error", 3.5, "7", True, "core", False)]
    ends = end_offsets(kafka_bootstrap, topic)
    assert committed_offsets(kafka_bootstrap, f"g-{table}", topic) == ends

    refused = {
        (
            dict(m.headers() or [])[h.DLQ_ORIGINAL_PARTITION],
            dict(m.headers() or [])[h.DLQ_ORIGINAL_OFFSET],
        )
        for m in read_all(kafka_bootstrap, dlq)
    }
    assert len(refused) == invalid  # replays may repeat a DLQ record, never lose one


def test_database_outage_pauses_the_sink_and_nothing_is_lost(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    postgres_server: PostgresServer,
) -> None:
    topic, dlq = topic_factory("pgout", partitions=2), topic_factory("pgout-dlq")
    table = unique_table("outage")
    fill(kafka_bootstrap, topic, 3_000, invalid_every=0)
    breaker = CircuitBreaker(
        "test-sink", failure_threshold=2, recovery_timeout=0.5, failure_on=(TransientError,)
    )
    sink = PostgresSink(
        postgres_server.dsn,
        table,
        breaker=breaker,
        retry=RetryPolicy(initial=0.05, max_delay=0.2, max_attempts=3, total_timeout=2.0),
        connect_timeout=1.0,
    )
    stop = threading.Event()
    runner = SinkRunner(
        {"bootstrap.servers": kafka_bootstrap},
        sink,
        SinkRunnerOptions(
            topic=topic,
            group_id=f"g-{table}",
            dlq_topic=dlq,
            checkpoint_interval=0.2,
            max_backpressure_wait=1.0,
        ),
        stop=stop,
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(
            lambda: count(postgres_server, table) == 3_000,
            timeout=60,
            interval=0.1,
            message="first batch written",
        )
        postgres_server.stop()
        fill(kafka_bootstrap, topic, 0, 0)
        produce(kafka_bootstrap, topic, [(None, enriched(i)) for i in range(3_000, 5_000)])
        wait_until(
            lambda: runner.stats.backpressure_waits >= 1,
            timeout=60,
            interval=0.1,
            message="sink paused for backpressure",
        )
        assert sum(runner.stats.committed.values()) == 3_000  # nothing past the outage
        time.sleep(1.0)
    finally:
        postgres_server.start()
    wait_until(
        lambda: count(postgres_server, table) == 5_000,
        timeout=60,
        interval=0.2,
        message="rows written after the outage",
    )
    wait_until(
        lambda: sum(runner.stats.committed.values()) == 5_000,
        timeout=30,
        interval=0.1,
        message="offsets committed after the outage",
    )
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert sink.inserted == 5_000 and runner.stats.rejected == 0
