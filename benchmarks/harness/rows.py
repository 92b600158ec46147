"""Rows of the benchmark: which systems exist, and what one row's result holds.

The JSON form of a row (``Row.as_dict``) is a contract: ``stream plan`` reads
the row named ``stream`` and its ``events_per_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

CEILING: Final = "ceiling"
STREAM: Final = "stream"
STREAM_EOS: Final = "stream-eos"
STREAM_X2: Final = "stream-x2"
QUIX: Final = "quix"
FAUST: Final = "faust-per-event"
KSTREAMS: Final = "kstreams"
#: ``--format avro``: the worker over the same events framed as Avro (JSON output).
STREAM_AVRO: Final = "stream-avro"
#: Every row, in the order they run and are printed.
ROW_NAMES: Final = (CEILING, STREAM, STREAM_EOS, STREAM_X2, QUIX, FAUST, KSTREAMS)
#: The worker's rows (``stream worker`` processes).
WORKER_ROWS: Final = (STREAM, STREAM_EOS, STREAM_X2)
#: Rows that can also measure latency at a fixed offered rate (the ceiling's is the floor:
#: what client + broker alone add).
LATENCY_ROWS: Final = (CEILING, STREAM, STREAM_EOS, QUIX, FAUST, KSTREAMS)
#: Rows that run in their own environment (benchmarks/peers/envs.py), not the product's.
PEER_ROWS: Final = (QUIX, FAUST, KSTREAMS)

DESCRIPTIONS: Final = {
    CEILING: "consume + produce the same records, no processing (client + broker limit)",
    STREAM: "one `stream worker`: validate, enrich, correlate, DLQ, commits",
    STREAM_EOS: "one `stream worker` with STREAM_PROCESSING_GUARANTEE=exactly_once "
    "(outputs read back read_committed)",
    STREAM_X2: "two `stream worker` processes in one consumer group (group throughput)",
    QUIX: "the same pipeline in Quix Streams (benchmarks/peers/quix_pipeline.py)",
    FAUST: "the same pipeline as per-event Faust agents (benchmarks/peers/faust_per_event.py)",
    KSTREAMS: "the same pipeline in Kafka Streams (benchmarks/peers/kstreams), best of 1 and 2 "
    "stream threads",
    STREAM_AVRO: "one `stream worker` with format: avro over the same events in Avro "
    "(--format avro; schema registry)",
}

#: Workloads (input shapes and pipelines): the bundled observability pipeline, on which
#: every row runs, and the orders pipeline (``stream/pipelines/orders.yaml``: JSON Schema,
#: a topic join, an HTTP join, a derived field, a hopping window), on which only the
#: product's rows run (the peers implement the observability pipeline only).
OBSERVABILITY: Final = "observability"
ORDERS: Final = "orders"
WORKLOADS: Final = (OBSERVABILITY, ORDERS)
ORDERS_ROWS: Final = (CEILING, STREAM, STREAM_EOS)


def row_label(workload: str, name: str) -> str:
    """The row's name in the table and JSON: ``stream``, or ``orders/stream`` for the
    orders workload (so ``stream plan`` keeps finding the observability ``stream`` row)."""
    return name if workload == OBSERVABILITY else f"{workload}/{name}"


OK: Final = "ok"
FAILED: Final = "FAILED"
TIMEOUT: Final = "TIMEOUT"
SKIPPED: Final = "skipped"


@dataclass(frozen=True)
class Latency:
    """End-to-end latency (input CreateTime -> output LogAppendTime) at an offered rate."""

    offered_rate: float
    achieved_rate: float
    sent: int
    #: Valid events among ``sent``: each must come out enriched exactly once.
    expected: int
    matched: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    #: Per second of the offered load (by produce time): events, p50, p99, max — tells a
    #: steady tail from one stall.
    timeline: list[dict[str, float]] = field(default_factory=list)
    #: p99 over the events produced after the first ``STEADY_AFTER_S`` seconds of load.
    steady_p99_ms: float | None = None
    #: The first seconds in 100 ms steps (by produce time): events, p50, p99, max — what
    #: the start-up spike is made of.
    start: list[dict[str, float]] = field(default_factory=list)
    #: The system during the same seconds, every 100 ms from the load generator's start
    #: (``latency.StartWatcher``: progress, checkpoints, GC).
    start_system: list[dict[str, float]] = field(default_factory=list)

    @property
    def worst_second(self) -> dict[str, float] | None:
        return max(self.timeline, key=lambda s: s["max"]) if self.timeline else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "p50": round(self.p50_ms, 1),
            "p95": round(self.p95_ms, 1),
            "p99": round(self.p99_ms, 1),
            "max": round(self.max_ms, 1),
            "steady_p99": None if self.steady_p99_ms is None else round(self.steady_p99_ms, 1),
            "timeline": self.timeline,
            "start": self.start,
            "start_system": self.start_system,
            "matched": self.matched,
            "expected": self.expected,
            "sent": self.sent,
            "offered_rate": self.offered_rate,
            "achieved_rate": round(self.achieved_rate, 1),
        }


@dataclass
class Row:
    """The measurements of one system; ``status`` is ok, FAILED, TIMEOUT or skipped."""

    name: str
    events: int
    status: str = OK
    #: ``observability`` or ``orders`` (``WORKLOADS``).
    workload: str = OBSERVABILITY
    seconds: float | None = None
    events_per_s: float | None = None
    cpu_seconds_per_million: float | None = None
    peak_rss_mb: float | None = None
    #: Records found in the output topics, by kind (enriched, dlq, ...).
    outputs: dict[str, int] = field(default_factory=dict)
    #: What ``outputs`` must be for the row to be correct.
    expected_outputs: dict[str, int] = field(default_factory=dict)
    latency: Latency | None = None
    #: Kafka client (and framework) versions the row ran, e.g. confluent-kafka and
    #: librdkafka for the Python rows, kafka-clients for Kafka Streams.
    clients: dict[str, str] = field(default_factory=dict)
    #: Why latency was not measured, or a remark about it.
    latency_note: str | None = None
    #: Why the row failed, or remarks (e.g. a rebalance during the run).
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def system(self) -> str:
        """The system the row ran (``stream`` for ``orders/stream``)."""
        return self.name.rsplit("/", 1)[-1]

    def fail(self, status: str, reason: str) -> None:
        self.status = status
        self.notes.append(reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload": self.workload,
            "status": self.status,
            "ok": self.ok,
            "events": self.events,
            "seconds": _round(self.seconds, 3),
            "events_per_s": _round(self.events_per_s, 1),
            "cpu_seconds_per_million": _round(self.cpu_seconds_per_million, 2),
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
            "outputs": self.outputs,
            "expected_outputs": self.expected_outputs,
            "clients": self.clients,
            "latency_ms": self.latency.as_dict() if self.latency else None,
            "latency_note": self.latency_note,
            "notes": self.notes,
            "detail": self.detail,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
