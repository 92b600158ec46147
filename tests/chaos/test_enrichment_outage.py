"""The enrichment dependency (a real PostgreSQL) fails 100 % mid-run, then recovers.

The worker reads service reference data from PostgreSQL
(``enrich.reference_source: postgres``) behind the ``reference-postgres``
circuit breaker. Events come in three phases, each from services the worker has
not seen before (so each needs a lookup): before the outage, during it
(PostgreSQL stopped), and after it (PostgreSQL started again).

* ``on_lookup_failure: degrade`` — events keep flowing during the outage, marked
  ``enrichment.degraded: true``; the breaker opens, then closes after recovery,
  and later events are fully enriched.
* ``on_lookup_failure: pause`` — during the outage nothing is written: the input
  partitions pause (``stream_paused_partitions``) and the events wait; after
  recovery they are all enriched, none degraded, none lost or repeated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.postgres_reference import REFERENCE_DDL
from tests.integration.postgres_fixture import PostgresServer, postgres_server, unique_table

from .harness import (
    BackgroundProducer,
    Pipeline,
    Worker,
    account,
    event,
    inputs_of,
    produce,
    read_topic,
    wait_all_committed,
    wait_for,
    workers,
)

__all__ = ["postgres_server"]  # the session fixture

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

PER_PHASE = 3_000
REFRESH_S = 0.5
BREAKER = "reference-postgres"


def _phase(name: str, start: int, table_rows: bool = True) -> list[tuple[bytes, bytes]]:
    sources = [f"svc-{name}{i}" for i in range(5)]
    return [
        (b"k%d" % i, event(i, source=sources[i % 5], prefix="ev"))
        for i in range(start, start + PER_PHASE)
    ]


def _seed(server: PostgresServer, table: str, phases: str) -> None:
    for name in phases:
        for i in range(5):
            server.execute(
                f"INSERT INTO {table} VALUES (%s, %s, %s, %s)",
                (f"svc-{name}{i}", f"team-{name}", 1, "oncall"),
            )


@pytest.mark.parametrize("mode", ["degrade", "pause"])
def test_breaker_opens_during_the_outage_and_closes_after(
    mode: str,
    postgres_server: PostgresServer,
    pipeline_factory: Callable[..., Pipeline],
    workdir: Path,
    chaos_report: Callable[[dict[str, Any]], None],
) -> None:
    table = unique_table("reference")
    postgres_server.execute(REFERENCE_DDL.replace("{}", table))
    _seed(postgres_server, table, "abc")  # services of all three phases are known
    pipeline = pipeline_factory(partitions=2)
    env = {
        "STREAM_ENRICH__REFERENCE_SOURCE": "postgres",
        "STREAM_ENRICH__POSTGRES_DSN": postgres_server.dsn,
        "STREAM_ENRICH__POSTGRES_TABLE": table,
        "STREAM_ENRICH__REFRESH_INTERVAL": str(REFRESH_S),
        "STREAM_ENRICH__ON_LOOKUP_FAILURE": mode,
    }
    before, during, after = _phase("a", 0), _phase("b", PER_PHASE), _phase("c", 2 * PER_PHASE)
    worker = Worker(pipeline, workdir, "w", env=env)
    positions: list[tuple[int, int]] = []
    paused_during = 0.0
    with workers(worker):
        worker.start()
        worker.wait_ready()
        positions += produce(pipeline, before)
        wait_all_committed(pipeline, timeout=60, workers=[worker])

        postgres_server.stop()
        try:
            time.sleep(4 * REFRESH_S)  # the reference reader notices
            # Streamed over ~3 s, so the worker sees many batches (lookups) during the outage.
            streaming = BackgroundProducer(pipeline, during, rate=PER_PHASE / 3)
            streaming.start()
            wait_for(
                lambda: worker.metric(
                    "stream_circuit_breaker_transitions_total", breaker=BREAKER, to_state="open"
                ),
                30,
                "the breaker to open",
            )
            positions += streaming.finish()
            if mode == "pause":
                paused_during = wait_for(
                    lambda: worker.metric("stream_paused_partitions"), 30, "the input to pause"
                )
                time.sleep(2)
                written = {_id(r.value) for r in read_topic(pipeline, pipeline.enriched)}
                assert not written & {f"ev-{i}" for i in range(PER_PHASE, 2 * PER_PHASE)}
            else:
                wait_all_committed(pipeline, timeout=60, workers=[worker])
        finally:
            postgres_server.start()

        time.sleep(4 * REFRESH_S)  # readable again; the breaker's next probe succeeds
        positions += produce(pipeline, after)
        wait_all_committed(pipeline, timeout=90, workers=[worker])
        state = worker.metric("stream_circuit_breaker_state", breaker=BREAKER)
        opened = worker.metric(
            "stream_circuit_breaker_transitions_total", breaker=BREAKER, to_state="open"
        )
        closed = worker.metric(
            "stream_circuit_breaker_transitions_total", breaker=BREAKER, to_state="closed"
        )
        assert worker.metric("stream_paused_partitions") == 0
        assert worker.terminate()[0] == 0

    records = before + during + after
    enriched = read_topic(pipeline, pipeline.enriched)
    ledger = account(
        inputs_of(positions, [_id(v) for _, v in records], [True] * len(records)),
        enriched,
        read_topic(pipeline, pipeline.dlq),
    )
    degraded = {_id(r.value) for r in enriched if _enrichment(r.value).get("degraded")}
    phase_of = {f"ev-{i}": i // PER_PHASE for i in range(3 * PER_PHASE)}
    degraded_by_phase = [sum(1 for d in degraded if phase_of[d] == k) for k in range(3)]
    chaos_report(
        ledger.row(
            f"PostgreSQL down, on_lookup_failure={mode}",
            guarantee="at_least_once",
            notes=f"degraded per phase {degraded_by_phase}, breaker opened {opened:.0f}x, "
            f"closed {closed:.0f}x, max paused partitions {paused_during:.0f}",
        )
    )
    assert ledger.lost == [] and ledger.duplicates == {}
    assert opened >= 1 and closed >= 1 and state == 0
    if mode == "degrade":
        assert degraded_by_phase == [0, PER_PHASE, 0]
    else:
        assert degraded_by_phase == [0, 0, 0]
        assert paused_during == 2
    teams = {_enrichment(r.value).get("team") for r in enriched if phase_of[_id(r.value)] != 1}
    assert teams == {"team-a", "team-c"}


def _id(value: bytes | None) -> str:
    return str(json.loads(value or b"{}")["event_id"])


def _enrichment(value: bytes | None) -> dict[str, Any]:
    return dict(json.loads(value or b"{}").get("enrichment", {}))
