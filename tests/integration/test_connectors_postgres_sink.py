"""``stream sink postgres`` against the real broker and a real PostgreSQL.

* SIGKILL mid-run, restart: the table holds every valid event exactly once.
* PostgreSQL stopped mid-run: the sink pauses (breaker + retry ->
  backpressure), commits nothing it has not written, and finishes once the
  database is back.
* A backpressure pause always ends, even when the clock passes its deadline
  between two reads (a busy machine): it once blocked forever in ``consume``.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from connectors.base import Record, Sink
from connectors.postgres_sink import PostgresSink
from connectors.sink_runner import SinkRunner, SinkRunnerOptions
from stream.errors import BackpressureError, TransientError
from stream.kafka import headers as h
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.resilience.retry import RetryPolicy
from stream.stages import Reject
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
    with RunnerThread(runner, stop) as running:
        try:
            running.wait_until(
                lambda: count(postgres_server, table) == 3_000, 60, "first batch written"
            )
            postgres_server.stop()
            produce(kafka_bootstrap, topic, [(None, enriched(i)) for i in range(3_000, 5_000)])
            running.wait_until(
                lambda: runner.stats.backpressure_waits >= 1, 60, "sink paused for backpressure"
            )
            assert sum(runner.stats.committed.values()) == 3_000  # nothing past the outage
            time.sleep(1.0)
            # Still pausing and retrying, not stuck in the first pause.
            running.wait_until(
                lambda: runner.stats.backpressure_waits >= 2, 30, "sink still retrying"
            )
        finally:
            postgres_server.start()
        # Recovery takes one breaker recovery (0.5 s) plus one pause (1 s); 60 s is slack
        # for a loaded machine, not part of the design.
        running.wait_until(
            lambda: count(postgres_server, table) == 5_000, 60, "rows written after the outage"
        )
        running.wait_until(
            lambda: sum(runner.stats.committed.values()) == 5_000,
            30,
            "offsets committed after the outage",
        )
    assert sink.inserted == 5_000 and runner.stats.rejected == 0


class RunnerThread:
    """Runs a :class:`SinkRunner` in a thread; waits fail at once if the runner died.

    Leaving the block stops the runner and checks that it ended (a runner stuck
    in a blocking call would otherwise only show up as a timeout elsewhere).
    """

    def __init__(self, runner: SinkRunner, stop: threading.Event) -> None:
        self._runner = runner
        self._stop = stop
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sink-runner", daemon=True)

    def _run(self) -> None:
        try:
            self._runner.run()
        except BaseException as exc:  # reported by wait_until and __exit__
            self.error = exc

    def __enter__(self) -> RunnerThread:
        self._thread.start()
        return self

    def wait_until(self, predicate: Callable[[], bool], timeout: float, message: str) -> None:
        def done() -> bool:
            if self.error is not None:
                raise AssertionError(f"sink runner failed: {self.error!r}") from self.error
            return predicate()

        wait_until(done, timeout=timeout, interval=0.1, message=message)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60 if exc_info[0] is None else 5)
        if exc_info[0] is None:
            assert not self._thread.is_alive(), "sink runner did not stop within 60s"


class FlakySink(Sink):
    """Keeps records in memory; the first ``failures`` flushes apply backpressure."""

    name = "flaky"

    def __init__(self, failures: int, retry_after: float) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.pending: list[bytes] = []
        self.written: list[bytes] = []

    def add(self, batch: Sequence[Record]) -> list[Reject]:
        self.pending.extend(m.value() or b"" for m in batch)
        return []

    def flush(self) -> None:
        if self.failures and self.pending:
            self.failures -= 1
            raise BackpressureError(self.retry_after, "flaky sink says wait")
        self.written.extend(self.pending)
        self.pending.clear()

    def discard(self) -> None:
        self.pending.clear()


class SteppingClock:
    """A clock that moves ``step`` seconds at every read, like one on a busy machine."""

    def __init__(self, step: float) -> None:
        self._now = time.monotonic()
        self._step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += self._step
            return self._now


def test_a_pause_ends_even_when_the_clock_passes_its_deadline_between_two_reads(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    """A 0.1 s pause read by a clock moving 0.06 s per read: the second read is past the
    deadline. Computing the wait from it gave ``consume`` a negative timeout, which
    librdkafka takes as "forever", and with the partitions paused it never returned."""
    topic = topic_factory("pause-deadline")
    produce(kafka_bootstrap, topic, [(None, f"r{i}".encode()) for i in range(10)])
    sink = FlakySink(failures=3, retry_after=0.1)
    stop = threading.Event()
    runner = SinkRunner(
        {"bootstrap.servers": kafka_bootstrap},
        sink,
        SinkRunnerOptions(
            topic=topic, group_id=f"g-{topic}", dlq_topic=None, checkpoint_interval=0.0
        ),
        stop=stop,
        clock=SteppingClock(0.06),
    )
    with RunnerThread(runner, stop) as running:
        running.wait_until(
            lambda: sum(runner.stats.committed.values()) == 10, 30, "records committed"
        )
    assert sink.written == [f"r{i}".encode() for i in range(10)]
    assert runner.stats.backpressure_waits == 3
