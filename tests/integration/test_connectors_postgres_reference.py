"""Enrichment reference data from PostgreSQL: refresh, version bumps, outage and recovery.

Runs the real enrich stage with its circuit breaker over a
:class:`PostgresReference` while the session's PostgreSQL is stopped and
started again. No Kafka needed.
"""

from __future__ import annotations

import time

import msgspec
import pytest

import tests.support.observability as obs
from connectors.postgres_reference import REFERENCE_DDL, PostgresReference, build_reference_lookup
from stream.config import load_settings
from stream.errors import ConfigError, TransientError
from stream.pipelines.observability import Event
from stream.resilience.circuit_breaker import BreakerState, CircuitBreaker
from stream.stages.enrich import ReferenceTable
from tests.integration.postgres_fixture import PostgresServer, postgres_server, unique_table
from tests.support.pipeline import wait_until

__all__ = ["postgres_server"]  # the session fixture, imported for pytest

T0 = 1_700_000_000_000


def reference_table(server: PostgresServer, rows: list[tuple[str, str, int, str]]) -> str:
    table = unique_table("reference")
    server.execute(REFERENCE_DDL.replace("{}", table))
    for row in rows:
        server.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", row)
    return table


def events(*sources: str) -> tuple[list[Event], list[int], list[bytes]]:
    """A validated batch as the enrich stage takes it: events, event times, raw values."""
    batch = [Event(f"e-{s}", "t", s, T0, "error") for s in sources]
    return batch, [T0] * len(batch), [msgspec.json.encode(e) for e in batch]


def test_lookup_serves_the_table_and_version_changes_only_with_content(
    postgres_server: PostgresServer,
) -> None:
    table = reference_table(
        postgres_server, [("auth", "identity", 1, "ann"), ("web", "edge", 2, "bo")]
    )
    reference = PostgresReference(postgres_server.dsn, table, refresh_interval=0.1)
    reference.start()
    try:
        assert reference.lookup({"auth", "web", "unknown"}) == {
            "auth": {"team": "identity", "tier": 1, "owner": "ann"},
            "web": {"team": "edge", "tier": 2, "owner": "bo"},
        }
        assert len(reference) == 2
        first = reference.version
        reads = reference.reads
        wait_until(
            lambda: reference.reads >= reads + 3,
            timeout=10,
            interval=0.05,
            message="background re-reads",
        )
        assert reference.version == first  # same content, same version
        postgres_server.execute(f"UPDATE {table} SET team = 'platform' WHERE service = 'auth'")
        wait_until(
            lambda: reference.version > first,
            timeout=10,
            interval=0.05,
            message="version bump after a change",
        )
        assert reference.lookup({"auth"})["auth"]["team"] == "platform"
    finally:
        reference.close()


def test_outage_opens_the_breaker_and_recovery_closes_it(
    postgres_server: PostgresServer,
) -> None:
    table = reference_table(postgres_server, [("auth", "identity", 1, "ann")])
    reference = PostgresReference(
        postgres_server.dsn, table, refresh_interval=0.2, connect_timeout=1.0
    )
    reference.start()
    breaker = CircuitBreaker(
        "reference-test", failure_threshold=2, recovery_timeout=0.5, failure_on=(TransientError,)
    )
    enricher = obs.enricher(reference, breaker)
    try:
        result = enricher.enrich(*events("auth"))
        assert b'"known_service":true' in result.values[0] and result.degraded == 0

        postgres_server.stop()
        try:
            wait_until(
                lambda: not reference.available,
                timeout=15,
                interval=0.05,
                message="failed re-read noticed",
            )
            with pytest.raises(TransientError, match=f"reference table {table} unavailable"):
                reference.lookup({"auth"})
            assert enricher.enrich(*events("new-1")).degraded == 1
            assert breaker.state is BreakerState.CLOSED
            assert enricher.enrich(*events("new-2")).degraded == 1
            assert breaker.state is BreakerState.OPEN
            cached = enricher.enrich(*events("auth"))  # already-known sources keep enrichment
            assert cached.degraded == 0 and b'"team":"identity"' in cached.values[0]
        finally:
            postgres_server.start()

        wait_until(
            lambda: reference.available,
            timeout=20,
            interval=0.05,
            message="re-read after the database came back",
        )
        time.sleep(breaker.recovery_timeout)
        recovered = enricher.enrich(*events("new-3"))
        assert recovered.degraded == 0 and recovered.unknown == 1
        assert breaker.state is BreakerState.CLOSED
    finally:
        reference.close()


def test_build_reference_lookup_follows_the_settings(postgres_server: PostgresServer) -> None:
    lookup, breaker = build_reference_lookup(load_settings())
    assert isinstance(lookup, ReferenceTable) and breaker is None

    with pytest.raises(ConfigError, match=r"enrich\.postgres_dsn"):
        build_reference_lookup(load_settings(enrich={"reference_source": "postgres"}))

    table = reference_table(postgres_server, [("auth", "identity", 1, "ann")])
    settings = load_settings(
        enrich={
            "reference_source": "postgres",
            "postgres_dsn": postgres_server.dsn,
            "postgres_table": table,
            "refresh_interval": 5.0,
        }
    )
    lookup, breaker = build_reference_lookup(settings)
    try:
        assert isinstance(lookup, PostgresReference)
        assert lookup.lookup({"auth"})["auth"]["tier"] == 1
        assert breaker is not None and breaker.recovery_timeout == 5.0
    finally:
        assert isinstance(lookup, PostgresReference)
        lookup.close()
