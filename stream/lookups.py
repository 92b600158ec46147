"""The sources behind a pipeline's joins: topic tables, HTTP services, PostgreSQL.

:func:`build_lookups` makes one :class:`~stream.stages.enrich.ReferenceLookup` per
join of the pipeline file, and a circuit breaker for each external one:

* ``table: {topic}`` — a :class:`~stream.stages.enrich.ReferenceTable` read to the
  topic's end at start-up and followed while running (:class:`TableFeeds`); it
  never fails, so it gets no breaker.
* ``http: {url, timeout, cache_ttl}`` — :class:`HttpLookup`: one ``GET`` per
  distinct key the enrich stage lacks (concurrently, per batch), answers cached for
  ``cache_ttl``; connection errors, timeouts and 5xx are transient (the breaker
  counts them), 404 means "no value".
* ``postgres: {dsn_env, query, key_column}`` — the query read whole in the
  background (:class:`connectors.postgres_reference.PostgresReference`).

The bundled pipeline's ``reference_join`` keeps its older settings: ``topics.reference``
names its topic and ``enrich.reference_source: postgres`` (with ``postgres_dsn``,
``postgres_table``) moves it to PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from stream.config import Settings
from stream.errors import ConfigError, TransientError
from stream.kafka.reader import TopicTail
from stream.observability import metrics
from stream.pipeline_spec import HttpSource, JoinSpec
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.stages.enrich import ReferenceLookup, ReferenceTable

log = logging.getLogger(__name__)


def parse_table_records(records: list[Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """Decode a table topic's records (key = join value, value = JSON object or tombstone).

    A bad record is logged and skipped: reference data must not stop the worker.
    """
    updates: list[tuple[str, dict[str, Any] | None]] = []
    for m in records:
        key = m.key()
        if not key:
            continue
        value = m.value()
        try:
            decoded = orjson.loads(value) if value else None
            if decoded is not None and not isinstance(decoded, dict):
                raise ValueError("the value is not a JSON object")
            updates.append((key.decode(), decoded))
        except Exception as exc:
            metrics.errors_total.labels(stage="reference", error_class=type(exc).__name__).inc()
            log.warning("skipping bad reference record for %r: %s", key, exc)
    return updates


class TableFeeds:
    """The compacted topics behind table joins: read to the end, then followed."""

    def __init__(self) -> None:
        self._feeds: list[tuple[ReferenceTable, TopicTail, str]] = []

    def add(self, client_config: dict[str, str], topic: str) -> ReferenceTable:
        table = ReferenceTable()
        tail = TopicTail(client_config, topic)
        table.apply(parse_table_records(tail.read_until_caught_up()))
        log.info("loaded %d reference values from %s", len(table), topic)
        self._feeds.append((table, tail, topic))
        return table

    def poll(self) -> None:
        """Apply updates that arrived since the last call (non-blocking)."""
        for table, tail, _ in self._feeds:
            table.apply(parse_table_records(tail.poll(10_000, 0)))

    def close(self) -> None:
        for _, tail, _ in self._feeds:
            tail.close()

    def __len__(self) -> int:
        return sum(len(table) for table, _, _ in self._feeds)


class HttpLookup:
    """Values from an HTTP service, one ``GET`` per key, cached for ``cache_ttl``.

    ``version`` moves every ``cache_ttl``, so the enrich stage re-asks each key at
    most that often; a batch's missing keys are fetched concurrently.
    """

    def __init__(self, spec: HttpSource, name: str) -> None:
        self._url = spec.url
        self._placeholder = spec.url[spec.url.index("{") : spec.url.index("}") + 1]
        self._timeout = spec.timeout / 1000
        self._ttl = spec.cache_ttl / 1000
        self._pool = ThreadPoolExecutor(spec.concurrency, thread_name_prefix=f"lookup-{name}")
        self.name = name
        self.requests = 0

    @property
    def version(self) -> int:
        return int(time.monotonic() / self._ttl)

    def lookup(self, keys: Collection[str]) -> Mapping[str, Mapping[str, Any]]:
        answers = list(self._pool.map(self._get, keys))
        return {k: v for k, v in zip(keys, answers, strict=True) if v is not None}

    def _get(self, key: str) -> Mapping[str, Any] | None:
        url = self._url.replace(self._placeholder, urllib.parse.quote(key, safe=""))
        self.requests += 1
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code >= 500 or exc.code == 429:
                raise TransientError(f"lookup {self.name}: HTTP {exc.code} for {key!r}") from None
            log.warning("lookup %s: HTTP %d for %r; treated as no value", self.name, exc.code, key)
            return None
        except (urllib.error.URLError, OSError) as exc:
            raise TransientError(f"lookup {self.name} unavailable: {exc}") from None
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("lookup %s: answer for %r is not JSON; treated as no value", self.name, key)
            return None
        return value if isinstance(value, dict) else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _breaker(name: str, recovery: float) -> CircuitBreaker:
    return CircuitBreaker(
        name, failure_threshold=3, recovery_timeout=recovery, failure_on=(TransientError,)
    )


def build_lookups(
    settings: Settings, feeds: TableFeeds, client_config: dict[str, str]
) -> tuple[dict[str, ReferenceLookup], dict[str, CircuitBreaker]]:
    """One lookup per join (tables registered with ``feeds``) and breakers for external ones."""
    lookups: dict[str, ReferenceLookup] = {}
    breakers: dict[str, CircuitBreaker] = {}
    for i, spec in enumerate(settings.joins):
        if spec.name == settings.reference_join:
            lookup, breaker = _reference_join(settings, spec, feeds, client_config)
        else:
            lookup, breaker = _join_lookup(spec, i, feeds, client_config)
        lookups[spec.name] = lookup
        if breaker is not None:
            breakers[spec.name] = breaker
    return lookups, breakers


def _join_lookup(
    spec: JoinSpec, index: int, feeds: TableFeeds, client_config: dict[str, str]
) -> tuple[ReferenceLookup, CircuitBreaker | None]:
    if spec.table is not None:
        return feeds.add(client_config, spec.table.topic), None
    if spec.http is not None:
        return HttpLookup(spec.http, spec.name), _breaker(f"lookup-{spec.name}", 5.0)
    assert spec.postgres is not None
    from connectors.postgres_reference import PostgresReference

    dsn = os.environ.get(spec.postgres.dsn_env)
    if not dsn:
        raise ConfigError(
            f"enrich[{index}].postgres.dsn_env",
            f"environment variable {spec.postgres.dsn_env} is not set",
        )
    refresh = spec.postgres.refresh_interval / 1000
    reference = PostgresReference(
        dsn,
        query=spec.postgres.query,
        key_column=spec.postgres.key_column,
        refresh_interval=refresh,
    )
    reference.start()
    return reference, _breaker(f"lookup-{spec.name}", min(refresh, 30.0))


def _reference_join(
    settings: Settings, spec: JoinSpec, feeds: TableFeeds, client_config: dict[str, str]
) -> tuple[ReferenceLookup, CircuitBreaker | None]:
    """The bundled pipeline's join, configured by ``topics.reference`` and ``enrich:``."""
    if settings.enrich.reference_source == "topic":
        return feeds.add(client_config, settings.topics.reference), None
    from connectors.postgres_reference import build_reference_lookup

    lookup, breaker = build_reference_lookup(settings)
    return lookup, breaker
