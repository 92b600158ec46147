"""PostgreSQL sink: ``events.enriched`` -> one table row per event, idempotent by ``event_id``.

One checkpoint is one database transaction::

    COPY stream_sink_staging (payload) FROM STDIN      -- every record since the last checkpoint
    INSERT INTO <table> (...) SELECT ... FROM stream_sink_staging
        ON CONFLICT (event_id) DO NOTHING
    COMMIT                                            -- staging rows vanish (ON COMMIT DELETE ROWS)

and the runner commits the Kafka offsets only after that COMMIT. A crash
between the two replays records that are already in the table; the conflict
clause skips them, so the table never holds an event twice and never misses
one. The first write of an ``event_id`` wins.

Why COPY of the raw JSON into a one-column temporary table: per record, the
Python side only checks the value against the ``EnrichedEvent`` contract
(~1 µs) and appends the bytes; PostgreSQL parses the JSON and extracts the
columns in C. Building a tuple per row for ``executemany`` or ``write_row``
costs several times more Python time.

Records that do not decode as enriched events (or contain ``\\u0000``, which
``jsonb`` refuses and which would fail every retry of the batch) are
returned as rejects and go to the DLQ. Database calls go through a circuit
breaker and a bounded retry; when both give up, :meth:`flush` raises
``BackpressureError`` and the runner pauses consumption, keeping the batch,
until the breaker lets a probe through.

Table (created when missing; ``--no-create-table`` to manage it yourself)::

    event_id text PRIMARY KEY, type text, source text, severity text,
    event_time timestamptz, entity text, value double precision, trace_id text,
    attributes jsonb, known_service boolean, score double precision, team text,
    tier integer, owner text, degraded boolean, written_at timestamptz DEFAULT now()
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from connectors.base import Record, Sink
from connectors.postgres import classify, connect, psycopg, redact_dsn, table_name
from stream.errors import BackpressureError, FatalError, TransientError
from stream.pipelines.observability import enriched_decoder
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.resilience.retry import RetryExhausted, RetryPolicy, retry_call
from stream.stages import Reject
from stream.stages.validate import EMPTY, MALFORMED_JSON, SCHEMA_VIOLATION

STAGING_TABLE: Final = "stream_sink_staging"
UNSUPPORTED_BY_POSTGRES: Final = "unsupported_by_postgres"

COLUMNS_DDL: Final = """
    event_id       text PRIMARY KEY,
    type           text NOT NULL,
    source         text NOT NULL,
    severity       text NOT NULL,
    event_time     timestamptz NOT NULL,
    entity         text,
    value          double precision,
    trace_id       text,
    attributes     jsonb,
    known_service  boolean NOT NULL,
    score          double precision NOT NULL,
    team           text,
    tier           integer,
    owner          text,
    degraded       boolean NOT NULL DEFAULT false,
    written_at     timestamptz NOT NULL DEFAULT now()
"""

_INSERT_COLUMNS: Final = (
    "event_id, type, source, severity, event_time, entity, value, trace_id, attributes, "
    "known_service, score, team, tier, owner, degraded"
)
_SELECT_FROM_PAYLOAD: Final = f"""
    SELECT p->>'event_id', p->>'type', p->>'source', p->>'severity',
           to_timestamp((p->>'event_time_ms')::bigint / 1000.0),
           p->>'entity', (p->>'value')::double precision, p->>'trace_id', p->'attributes',
           (e->>'known_service')::boolean, (e->>'score')::double precision,
           e->>'team', (e->>'tier')::integer, e->>'owner',
           coalesce((e->>'degraded')::boolean, false)
    FROM (SELECT payload AS p, payload->'enrichment' AS e FROM {STAGING_TABLE}) AS staged
"""

DEFAULT_RETRY: Final = RetryPolicy(initial=0.2, max_delay=5.0, max_attempts=4, total_timeout=15.0)


def default_breaker(name: str = "postgres-sink") -> CircuitBreaker:
    return CircuitBreaker(
        name, failure_threshold=3, recovery_timeout=5.0, failure_on=(TransientError,)
    )


def copy_payload(values: Sequence[bytes]) -> bytes:
    """``values`` as COPY text-format rows of one column.

    Backslash is COPY's escape character, so it is doubled; tab, CR and LF
    separate columns and rows, and can occur in valid JSON only as whitespace
    between tokens, so they become spaces.
    """
    blob = b"\n".join(values)
    if blob.count(b"\n") != len(values) - 1 or b"\t" in blob or b"\r" in blob:
        blob = b"\n".join(
            v.replace(b"\t", b" ").replace(b"\r", b" ").replace(b"\n", b" ") for v in values
        )
    return blob.replace(b"\\", b"\\\\") + b"\n"


class PostgresSink(Sink):
    """Writes enriched events to a PostgreSQL table, one transaction per checkpoint."""

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        table: str = "events_enriched",
        *,
        create_table: bool = True,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        connect_timeout: float = 5.0,
    ) -> None:
        psycopg()  # fail at construction, with the install hint, when psycopg is missing
        self._dsn = dsn
        self._table_parts = table_name(table)
        self.table = table
        self._create_table = create_table
        self._breaker = breaker or default_breaker()
        self._retry = retry
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._buffer: list[bytes] = []
        #: Rows inserted, and records skipped because their event_id was already there.
        self.inserted = 0
        self.duplicates = 0
        self.transactions = 0
        self.write_seconds = 0.0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresSink:
        """``postgres://user@host/db?...`` (the registry's URL form); options as keywords."""
        return cls(url, **options)

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (retrying while the server is unreachable) and create the table if needed.

        Start-up failures end the command with the database's own reason; the
        breaker is for outages while running, not for a wrong DSN.
        """
        try:
            retry_call(self._prepare, policy=self._retry, operation="postgres_sink.open")
        except RetryExhausted as exc:
            raise FatalError(f"{exc.last_error} (gave up after {exc.attempts} attempts)") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def summary(self) -> str:
        return (
            f"{self.inserted:,} rows inserted into {self.table} "
            f"({self.duplicates:,} already there) in {self.transactions:,} transactions"
        )

    # -- the Sink contract -------------------------------------------------------------------

    def add(self, batch: Sequence[Record]) -> list[Reject]:
        rejects: list[Reject] = []
        append = self._buffer.append
        decode = enriched_decoder.decode
        for i, record in enumerate(batch):
            value = record.value()
            if not value:
                rejects.append(Reject(i, EMPTY, "record has no value"))
                continue
            try:
                decode(value)
            except msgspec.ValidationError as exc:
                rejects.append(Reject(i, SCHEMA_VIOLATION, f"not an enriched event: {exc}"))
                continue
            except msgspec.DecodeError as exc:
                rejects.append(Reject(i, MALFORMED_JSON, str(exc)))
                continue
            if b"\\u0000" in value:
                rejects.append(
                    Reject(i, UNSUPPORTED_BY_POSTGRES, "jsonb cannot store the character \\u0000")
                )
                continue
            append(value)
        return rejects

    def flush(self) -> None:
        if not self._buffer:
            return
        try:
            retry_call(
                lambda: self._breaker.call(self._write),
                policy=self._retry,
                operation="postgres_sink.flush",
            )
        except RetryExhausted as exc:
            raise BackpressureError(
                max(self._breaker.retry_after(), 1.0),
                f"PostgreSQL unavailable ({exc.last_error}); {len(self._buffer):,} rows kept",
            ) from exc
        self._buffer.clear()

    def discard(self) -> None:
        self._buffer.clear()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # -- database work -----------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, timeout=self._connect_timeout)
            self._run_ddl(
                f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (payload jsonb) "
                "ON COMMIT DELETE ROWS"
            )
        return self._conn

    def _run_ddl(self, statement: str, *identifiers: tuple[str, ...]) -> None:
        pg = psycopg()
        sql = pg.sql.SQL(statement).format(*(pg.sql.Identifier(*i) for i in identifiers))
        try:
            with self._conn.transaction():
                self._conn.execute(sql)
        except pg.Error as exc:
            self._drop_connection()
            raise classify(exc, f"preparing {self.table}") from None

    def _prepare(self) -> None:
        self._connection()
        if self._create_table:
            self._run_ddl(f"CREATE TABLE IF NOT EXISTS {{}} ({COLUMNS_DDL})", self._table_parts)

    def _write(self) -> None:
        pg = psycopg()
        conn = self._connection()
        payload = copy_payload(self._buffer)
        insert = pg.sql.SQL(
            f"INSERT INTO {{}} ({_INSERT_COLUMNS}) {_SELECT_FROM_PAYLOAD} "
            "ON CONFLICT (event_id) DO NOTHING"
        ).format(pg.sql.Identifier(*self._table_parts))
        started = time.perf_counter()
        try:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {STAGING_TABLE} (payload) FROM STDIN") as copy:
                    copy.write(payload)
                cur.execute(insert)
                inserted = cur.rowcount
        except pg.Error as exc:
            self._drop_connection()
            raise classify(exc, f"writing {len(self._buffer):,} rows to {self.table}") from None
        self.write_seconds += time.perf_counter() - started
        self.transactions += 1
        self.inserted += inserted
        self.duplicates += len(self._buffer) - inserted

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __repr__(self) -> str:
        return f"PostgresSink({redact_dsn(self._dsn)!r}, table={self.table!r})"
