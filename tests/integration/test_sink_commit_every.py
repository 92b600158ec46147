"""``stream sink ... --commit-every N`` bounds one checkpoint — one PostgreSQL transaction — to N.

The runner consumed up to ``max_batch`` (10 000) records at a time and checked the
bound afterwards, so ``--commit-every 700`` wrote transactions of up to 10 000 rows.
Now it takes no more from the consumer than the checkpoint has room for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import pytest

from connectors.base import Record, Sink
from connectors.sink_runner import SinkRunner, SinkRunnerOptions
from stream.stages import Reject
from tests.integration.postgres_fixture import PostgresServer, postgres_server, unique_table
from tests.integration.test_connectors_postgres_sink import count, fill, sink_process

__all__ = ["postgres_server"]  # the session fixture, imported for pytest

pytestmark = pytest.mark.broker

RECORDS = 5_000
EVERY = 700


class CountingSink(Sink):
    """Remembers how many records each flush (checkpoint) held."""

    def __init__(self) -> None:
        self.open_records = 0
        self.flushes: list[int] = []

    def add(self, batch: Sequence[Record]) -> list[Reject]:
        self.open_records += len(batch)
        return []

    def flush(self) -> None:
        if self.open_records:
            self.flushes.append(self.open_records)
        self.open_records = 0

    def wants_checkpoint(self) -> bool:
        return False

    def discard(self) -> None:
        self.open_records = 0

    def summary(self) -> str:
        return f"{sum(self.flushes)} records in {len(self.flushes)} checkpoints"


def test_a_checkpoint_never_holds_more_than_commit_every(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("sink-every", partitions=3)
    fill(kafka_bootstrap, topic, RECORDS, invalid_every=0)
    sink = CountingSink()
    options = SinkRunnerOptions(
        topic=topic,
        group_id=f"g-{topic}",
        dlq_topic=None,
        checkpoint_interval=None,  # only the record count triggers checkpoints
        checkpoint_every=EVERY,
        max_batch=10_000,
        stop_at_end=True,
    )
    stats = SinkRunner({"bootstrap.servers": kafka_bootstrap}, sink, options).run()
    assert stats.consumed == RECORDS
    assert sum(sink.flushes) == RECORDS
    assert max(sink.flushes) <= EVERY, sink.flushes
    assert len(sink.flushes) == math.ceil(RECORDS / EVERY)


def test_postgres_transactions_are_bounded_by_commit_every(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    postgres_server: PostgresServer,
) -> None:
    topic, dlq = topic_factory("pg-every", partitions=2), topic_factory("pg-every-dlq")
    fill(kafka_bootstrap, topic, RECORDS, invalid_every=0)
    table = unique_table("every")
    proc = sink_process(
        kafka_bootstrap,
        postgres_server,
        topic,
        dlq,
        table,
        "--commit-every",
        str(EVERY),
        "--commit-interval",
        "3600",
        "--stop-at-end",
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert count(postgres_server, table) == RECORDS
    match = re.search(r"in ([\d,]+) transactions", out)
    assert match is not None, out
    # RECORDS rows, at most EVERY per transaction: at least ceil(RECORDS / EVERY) of them.
    assert int(match.group(1).replace(",", "")) >= math.ceil(RECORDS / EVERY), out
