"""Service reference data from a PostgreSQL table, for the enrich stage.

Implements :class:`stream.stages.enrich.ReferenceLookup`. The table is small
(one row per service), so instead of a query per lookup it is read whole
every ``refresh_interval`` seconds by a background thread and served from
memory; the hot path never waits on the database. ``version`` changes only
when a re-read finds different content, which is what makes the enrich
stage drop its per-(source, severity) cache.

While the database is unreachable (the last read failed), :meth:`lookup`
raises :class:`~stream.errors.TransientError`. The enrich stage counts that
on its circuit breaker and passes events through marked ``degraded``; the
breaker opens after a few failures and, once a re-read succeeds, its next
probe finds the lookup working and closes it. Sources the stage has already
cached keep their enrichment during an outage. Failed reads are retried
sooner than ``refresh_interval`` (exponential backoff, capped by it).

Expected table (name from ``enrich.postgres_table``)::

    CREATE TABLE reference_services (
        service text PRIMARY KEY,   -- the event's ``source``
        team    text,
        tier    integer,
        owner   text
    );
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from typing import Any, Final

from connectors.postgres import classify, connect, psycopg, redact_dsn, table_name
from stream.config import Settings
from stream.errors import ConfigError, StreamError, TransientError
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.resilience.retry import RetryPolicy
from stream.stages.enrich import ReferenceTable

log = logging.getLogger(__name__)

REFERENCE_DDL: Final = """
CREATE TABLE IF NOT EXISTS {} (
    service text PRIMARY KEY,
    team    text,
    tier    integer,
    owner   text
)
"""
#: Backoff between failed reads (capped by the refresh interval).
FAILED_READ_BACKOFF: Final = RetryPolicy(initial=0.5, multiplier=2.0, max_delay=30.0)


class PostgresReference:
    """A :class:`ReferenceLookup` re-read from PostgreSQL in the background."""

    def __init__(
        self,
        dsn: str,
        table: str = "reference_services",
        *,
        query: str | None = None,
        key_column: str = "service",
        refresh_interval: float = 30.0,
        connect_timeout: float = 5.0,
        backoff: RetryPolicy = FAILED_READ_BACKOFF,
    ) -> None:
        psycopg()  # the install hint, at construction
        self._dsn = dsn
        self._table = table_name(table)
        self.table = table if query is None else "query"
        #: A pipeline join's own query; None: the whole reference table.
        self._query = query
        self._key_column = key_column
        self.refresh_interval = refresh_interval
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._conn: Any = None
        self._services: dict[str, dict[str, Any]] = {}
        self._version = 0
        self._loaded = False
        self._error: str | None = "not loaded yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reads = 0
        self.failed_reads = 0

    # -- ReferenceLookup ---------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def lookup(self, sources: Collection[str]) -> Mapping[str, Mapping[str, Any]]:
        error = self._error
        if error is not None:
            raise TransientError(f"reference table {self.table} unavailable: {error}")
        services = self._services
        return {s: services[s] for s in sources if s in services}

    def __len__(self) -> int:
        return len(self._services)

    @property
    def available(self) -> bool:
        """True when the last read succeeded."""
        return self._error is None

    # -- reading -----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the table now. Returns True when the content changed; raises on failure."""
        try:
            rows = self._read()
        except StreamError as exc:
            self.failed_reads += 1
            self._error = str(exc)
            raise
        self.reads += 1
        services = {str(row[self._key_column]): row for row in rows if row.get(self._key_column)}
        for row in services.values():
            del row[self._key_column]
        changed = not self._loaded or services != self._services
        if changed:
            self._services = services
            self._version += 1
        self._loaded = True
        self._error = None
        return changed

    def _read(self) -> list[dict[str, Any]]:
        pg = psycopg()
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, timeout=self._connect_timeout, autocommit=True)
        query: Any = self._query
        if query is None:
            query = pg.sql.SQL("SELECT service, team, tier, owner FROM {}").format(
                pg.sql.Identifier(*self._table)
            )
        try:
            cursor = self._conn.execute(query)
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except pg.Error as exc:
            conn, self._conn = self._conn, None
            conn.close()
            raise classify(exc, f"reading {self.table}") from None

    # -- background refresh ------------------------------------------------------------------

    def start(self) -> None:
        """Read once now (a failure is logged, not raised), then keep re-reading in a thread."""
        try:
            self.refresh()
            log.info("loaded %d services from %s", len(self), self.table)
        except StreamError as exc:
            log.warning("reference data unavailable at start-up: %s", exc)
        self._thread = threading.Thread(
            target=self._refresh_loop, name="postgres-reference", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        failures = 0
        delay = self.refresh_interval if self._error is None else self._retry_delay(1)
        while not self._stop.wait(delay):
            try:
                if self.refresh():
                    log.info("reference data changed: %d services", len(self))
                if failures:
                    log.info("reference table %s readable again", self.table)
                failures = 0
                delay = self.refresh_interval
            except StreamError as exc:
                failures += 1
                if failures == 1:
                    log.warning("reading reference data failed: %s", exc)
                delay = self._retry_delay(failures)

    def _retry_delay(self, failures: int) -> float:
        return min(self.refresh_interval, self._backoff.backoff_cap(failures))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._connect_timeout + 5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"PostgresReference({redact_dsn(self._dsn)!r}, table={self.table!r})"


def build_reference_lookup(
    settings: Settings,
) -> tuple[ReferenceTable | PostgresReference, CircuitBreaker | None]:
    """The reference lookup ``settings.enrich`` asks for, and the breaker to guard it with.

    ``topic``: an empty :class:`ReferenceTable` (the caller feeds it from the
    compacted topic; it never fails, so no breaker). ``postgres``: a started
    :class:`PostgresReference` and a breaker that opens after 3 failed lookups
    and probes again after ``min(refresh_interval, 30)`` seconds.
    """
    enrich = settings.enrich
    if enrich.reference_source == "topic":
        return ReferenceTable(), None
    if enrich.postgres_dsn is None:
        raise ConfigError(
            "enrich.postgres_dsn", "is required when enrich.reference_source is postgres"
        )
    reference = PostgresReference(
        enrich.postgres_dsn.get_secret_value(),
        enrich.postgres_table,
        refresh_interval=enrich.refresh_interval,
    )
    reference.start()
    breaker = CircuitBreaker(
        "reference-postgres",
        failure_threshold=3,
        recovery_timeout=min(enrich.refresh_interval, 30.0),
        failure_on=(TransientError,),
    )
    return reference, breaker
