"""Inspect and replay the dead-letter topic (the logic behind ``stream dlq``).

A DLQ record is the original record (key, value, timestamp, headers kept) plus
the ``dlq.*`` headers of :mod:`stream.kafka.headers`. Operators need two
things from it: *what* is failing (counts by error class, stage and original
topic, and a few samples) and, once the cause is fixed, a way to *send the
records back* without creating loops or duplicates.

Inspect reads every partition from its low to its high watermark (as seen at
start) with ``assign()``: no consumer group, nothing committed, so looking
never changes anything. It reads in batches of up to 10 000 records and keeps
header values as bytes until they are shown, so 100k records take about a
second.

Replay re-produces the original key, value, timestamp and headers (without
any ``dlq.*`` header) and adds ``dlq.replayed: N``, the number of times the
record has been replayed. A replayed record that fails again reaches the DLQ
with that header still on it (the DLQ writer keeps original headers), so
replay skips it unless told ``--allow-replayed``: no replay loops. Progress
is stored as committed offsets of a consumer group, committed only after the
producer has acknowledged every record of a batch, so a second run (or a run
after a crash) resumes where the last one stopped instead of re-sending.
The group records how far the DLQ was *read*, not what matched: a replay with
other filters needs another ``--group``. Partitions are assigned explicitly
(the group is used only for its offsets), so two replays must not share a
group at the same time.

Replay refuses records whose event was already delivered: a ``late`` record
(``correlate.late_policy: dlq``) or any record dead-lettered at the correlate
stage had its enriched record written before it reached the DLQ, so sending it
back would deliver the event twice. They are counted as ``refused-delivered``
and passed over (their offsets are committed like any other) unless ``force``.

When the target topic is the record's original topic, the record goes back
to its original partition so per-key order relative to newer records is as
close as it can be; otherwise the producer's partitioner places it by key.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from stream.errors import BrokerUnavailableError, StreamError
from stream.kafka import headers as h
from stream.kafka.reader import retry_lookup

DEFAULT_DLQ_TOPIC: Final = "events.dlq"
DEFAULT_REPLAY_GROUP: Final = "stream-dlq-replay"
DEFAULT_BOOTSTRAP: Final = "127.0.0.1:9092"
#: Keys accepted by ``--filter KEY=VALUE``.
FILTER_KEYS: Final = ("error_class", "stage", "original_topic")
#: Shown for a record that lacks a ``dlq.*`` header (written by something else).
MISSING: Final = "(none)"

_DLQ_PREFIX: Final = "dlq."
#: DLQ records whose event was enriched and delivered before it was dead-lettered:
#: error class ``late``, and everything rejected by a stage after the enriched output.
DELIVERED_CLASSES: Final = frozenset({b"late"})
DELIVERED_STAGES: Final = frozenset({b"correlate"})


def was_delivered(fields: DlqFields) -> bool:
    """Whether the record's event already reached the enriched topic (replay would duplicate)."""
    return fields.error_class in DELIVERED_CLASSES or fields.stage in DELIVERED_STAGES


_BATCH: Final = 10_000
_LIBRDKAFKA_LOGGER: Final = logging.getLogger("stream.librdkafka")

_CONSUMER_SETTINGS: Final[dict[str, Any]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",  # records of aborted transactions are not DLQ records
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 10_485_760,
}
_PRODUCER_SETTINGS: Final[dict[str, Any]] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    "delivery.report.only.error": True,
}


class DlqToolError(StreamError):
    """A DLQ command cannot go on; the message is one line meant for the operator."""


# -- reading the dlq.* headers --------------------------------------------------------------


class DlqFields(NamedTuple):
    """The ``dlq.*`` headers of one record, as raw bytes (``b""`` when absent)."""

    error_class: bytes
    stage: bytes
    original_topic: bytes
    original_partition: bytes
    failed_at: bytes
    replayed: bytes | None


def dlq_fields(headers: h.AnyHeaders | None) -> DlqFields:
    """Pick the ``dlq.*`` headers out of a record's headers (last value wins, as in Kafka)."""
    error_class = stage = topic = partition = failed_at = b""
    replayed: bytes | None = None
    for key, value in h.header_items(headers):
        if not key.startswith(_DLQ_PREFIX):
            continue
        raw = value or b""
        if key == h.DLQ_ERROR_CLASS:
            error_class = raw
        elif key == h.DLQ_STAGE:
            stage = raw
        elif key == h.DLQ_ORIGINAL_TOPIC:
            topic = raw
        elif key == h.DLQ_ORIGINAL_PARTITION:
            partition = raw
        elif key == h.DLQ_FAILED_AT:
            failed_at = raw
        elif key == h.REPLAYED:
            replayed = raw
    return DlqFields(error_class, stage, topic, partition, failed_at, replayed)


def label(raw: bytes) -> str:
    """A header value for display: UTF-8 text, or :data:`MISSING` when empty."""
    return raw.decode("utf-8", "replace") if raw else MISSING


def parse_time(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 time; a time without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def replay_count(raw: bytes | None) -> int:
    """How many times a record was replayed already, from its ``dlq.replayed`` header."""
    if raw is None:
        return 0
    try:
        return max(1, int(raw))
    except ValueError:
        return 1  # present but unreadable: it was replayed at least once


def replay_headers(
    headers: h.AnyHeaders | None, previous_replays: int
) -> list[tuple[str, bytes | None]]:
    """The original headers without any ``dlq.*`` header, plus ``dlq.replayed``."""
    kept = [(k, v) for k, v in h.header_items(headers) if not k.startswith(_DLQ_PREFIX)]
    kept.append((h.REPLAYED, str(previous_replays + 1).encode()))
    return kept


# -- filters ------------------------------------------------------------------------------


def parse_filter(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` with KEY in :data:`FILTER_KEYS`; raises ValueError with a readable reason."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not value:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    if key not in FILTER_KEYS:
        raise ValueError(f"unknown filter key {key!r} (use one of: {', '.join(FILTER_KEYS)})")
    return key, value


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which DLQ records to replay.

    Values of one key are alternatives (OR); different keys must all match
    (AND). ``since`` (inclusive) and ``until`` (exclusive) compare with
    ``dlq.failed_at``; a record without a readable failure time does not
    match a time filter. An empty filter matches everything.
    """

    error_classes: frozenset[bytes] = frozenset()
    stages: frozenset[bytes] = frozenset()
    original_topics: frozenset[bytes] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(
        cls,
        pairs: Iterable[tuple[str, str]] = (),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> ReplayFilter:
        values: dict[str, set[bytes]] = {key: set() for key in FILTER_KEYS}
        for key, value in pairs:
            values[key].add(value.encode())
        if since is not None and until is not None and since >= until:
            raise ValueError("--since must be earlier than --until")
        return cls(
            error_classes=frozenset(values["error_class"]),
            stages=frozenset(values["stage"]),
            original_topics=frozenset(values["original_topic"]),
            since=since,
            until=until,
        )

    def matches(self, fields: DlqFields) -> bool:
        if self.error_classes and fields.error_class not in self.error_classes:
            return False
        if self.stages and fields.stage not in self.stages:
            return False
        if self.original_topics and fields.original_topic not in self.original_topics:
            return False
        if self.since is None and self.until is None:
            return True
        try:
            failed_at = parse_time(fields.failed_at.decode())
        except (ValueError, UnicodeDecodeError):
            return False
        if self.since is not None and failed_at < self.since:
            return False
        return self.until is None or failed_at < self.until


class RatePacer:
    """Keeps a sender at ``rate`` records per second on an absolute schedule.

    Record *n* may go at ``start + n / rate``; sleeping too long once is made up
    for by not sleeping afterwards, so the long-run rate is exact.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._sent = 0

    def wait(self) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._sent * self._interval
        if due > now:
            self._sleep(due - now)
        self._sent += 1


# -- inspect summary ----------------------------------------------------------------------


def preview(raw: bytes | None, max_chars: int) -> str | None:
    """Text of a key or value for display, cut to ``max_chars`` characters."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… ({len(raw)} bytes)"


@dataclass(frozen=True, slots=True)
class Sample:
    """One DLQ record as shown by ``stream dlq inspect``."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None
    value: str | None
    value_bytes: int
    headers: list[tuple[str, str | None]]

    @classmethod
    def of(cls, message: Message, max_chars: int) -> Sample:
        ts_type, ts = message.timestamp()
        value = message.value()
        return cls(
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            timestamp_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
            key=preview(message.key(), max_chars),
            value=preview(value, max_chars),
            value_bytes=0 if value is None else len(value),
            headers=[
                (k, None if v is None else v.decode("utf-8", "replace"))
                for k, v in h.header_items(message.headers())
            ],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": _iso(self.timestamp_ms),
            "key": self.key,
            "value": self.value,
            "value_bytes": self.value_bytes,
            "headers": [[k, v] for k, v in self.headers],
        }


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass
class InspectSummary:
    """Counts and samples accumulated over the scanned DLQ records."""

    topic: str
    samples_per_class: int = 3
    max_value_chars: int = 200
    #: partition -> (low, high) watermark at the start of the scan.
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    scanned: int = 0
    already_replayed: int = 0
    limit_reached: bool = False
    by_error_class: Counter[bytes] = field(default_factory=Counter)
    by_stage: Counter[bytes] = field(default_factory=Counter)
    by_original_topic: Counter[bytes] = field(default_factory=Counter)
    samples: dict[bytes, list[Sample]] = field(default_factory=dict)

    def add_batch(self, messages: list[Message]) -> None:
        by_class = self.by_error_class
        by_stage = self.by_stage
        by_topic = self.by_original_topic
        samples = self.samples
        wanted = self.samples_per_class
        replayed = 0
        for message in messages:
            fields = dlq_fields(message.headers())
            by_class[fields.error_class] += 1
            by_stage[fields.stage] += 1
            by_topic[fields.original_topic] += 1
            if fields.replayed is not None:
                replayed += 1
            if wanted:
                kept = samples.setdefault(fields.error_class, [])
                if len(kept) < wanted:
                    kept.append(Sample.of(message, self.max_value_chars))
        self.scanned += len(messages)
        self.already_replayed += replayed

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "scanned": self.scanned,
            "limit_reached": self.limit_reached,
            "partitions": {
                str(p): {"low": low, "high": high} for p, (low, high) in self.partitions.items()
            },
            "already_replayed": self.already_replayed,
            "by_error_class": _labelled(self.by_error_class),
            "by_stage": _labelled(self.by_stage),
            "by_original_topic": _labelled(self.by_original_topic),
            "samples": {
                label(cls): [s.to_json() for s in kept] for cls, kept in self.samples.items()
            },
        }

    def render(self) -> str:
        total = sum(high - low for low, high in self.partitions.values())
        lines = [
            f"DLQ topic {self.topic}: {total} record(s) in {len(self.partitions)} partition(s); "
            f"scanned {self.scanned}" + (" (stopped at --limit)" if self.limit_reached else ""),
        ]
        if not self.scanned:
            return "\n".join(lines)
        lines.append(f"already replayed once or more: {self.already_replayed}")
        for title, counts in (
            ("error class", self.by_error_class),
            ("stage", self.by_stage),
            ("original topic", self.by_original_topic),
        ):
            lines.append("")
            lines.append(f"{'count':>10}  {'share':>6}  {title}")
            for raw, count in counts.most_common():
                lines.append(f"{count:>10}  {count / self.scanned:>6.1%}  {label(raw)}")
        for raw, kept in self.samples.items():
            lines.append("")
            lines.append(f"== samples of {label(raw)} ({len(kept)}) ==")
            for sample in kept:
                lines.extend(_render_sample(sample))
        return "\n".join(lines)


def _labelled(counts: Counter[bytes]) -> dict[str, int]:
    return {label(raw): count for raw, count in counts.most_common()}


def _render_sample(sample: Sample) -> list[str]:
    lines = [
        f"- partition {sample.partition} offset {sample.offset} "
        f"timestamp {_iso(sample.timestamp_ms) or '-'}",
        f"    key:   {sample.key if sample.key is not None else '(null)'}",
        f"    value: {sample.value if sample.value is not None else '(null)'}",
    ]
    if sample.headers:
        lines.append("    headers:")
        lines.extend(f"      {k}: {v if v is not None else '(null)'}" for k, v in sample.headers)
    return lines


# -- replay report ------------------------------------------------------------------------


@dataclass
class ReplayReport:
    """Outcome of one replay run.

    ``replayed + skipped_already_replayed + refused_delivered + failed == matched``.
    """

    source: str
    target: str
    group: str
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    skipped_already_replayed: int = 0
    refused_delivered: int = 0
    failed: int = 0
    first_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "group": self.group,
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "replayed": self.replayed,
            "skipped_already_replayed": self.skipped_already_replayed,
            "refused_delivered": self.refused_delivered,
            "failed": self.failed,
            "first_error": self.first_error,
        }

    def render(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        lines = [
            f"{'DRY RUN: ' if self.dry_run else ''}{self.source} -> {self.target} "
            f"(group {self.group})",
            f"  scanned                   {self.scanned}",
            f"  matched                   {self.matched}",
            f"  {verb:<26}{self.replayed}",
            f"  skipped-already-replayed  {self.skipped_already_replayed}",
            f"  refused-delivered         {self.refused_delivered}",
            f"  failed                    {self.failed}",
        ]
        if self.refused_delivered:
            lines.append(
                f"  refused {self.refused_delivered} record(s) whose event was already "
                "delivered (error class late, or dead-lettered at the correlate stage after "
                "its enriched record was written): replaying would deliver it twice. Use "
                "--force (with a fresh --group) to replay them anyway."
            )
        if self.first_error:
            lines.append(f"  first error: {self.first_error}")
        return "\n".join(lines)


# -- Kafka plumbing -----------------------------------------------------------------------


def _client_config(base: dict[str, str], **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = dict(base)
    conf.update(overrides)
    # librdkafka writes every failed connection attempt to stderr; route it to a logger instead.
    conf.setdefault("logger", _LIBRDKAFKA_LOGGER)
    return conf


def _partitions(consumer: Consumer, topic: str, bootstrap: str, timeout: float) -> list[int]:
    """Partitions of ``topic``; one-line errors for an unreachable broker or a missing topic."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {bootstrap} within {timeout:g}s ({_kafka_reason(exc)})"
        ) from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise DlqToolError(f"topic {topic!r} does not exist on {bootstrap}")
    return sorted(info.partitions)


def _kafka_reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _watermarks(
    consumer: Consumer, topic: str, partitions: list[int], timeout: float
) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for p in partitions:
        ask = functools.partial(
            consumer.get_watermark_offsets, TopicPartition(topic, p), timeout=timeout, cached=False
        )
        out[p] = retry_lookup(ask, timeout)
    return out


def read_batches(
    consumer: Consumer,
    topic: str,
    start: dict[int, int],
    end: dict[int, int],
    *,
    batch_size: int = _BATCH,
    idle_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[list[Message]]:
    """Yield batches of records from ``start[p]`` up to (not including) ``end[p]``.

    Completion is judged by the consumer's *position*, which moves past
    transaction markers and compacted gaps that never arrive as records.
    Raises :class:`DlqToolError` if no record arrives for ``idle_timeout`` s.
    """
    pending = {p for p in end if start[p] < end[p]}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, start[p]) for p in sorted(pending)])
    last_progress = clock()
    while pending:
        messages = consumer.consume(batch_size, timeout=0.5)
        batch: list[Message] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise DlqToolError(f"reading {topic}: {error.str()}")
            if (message.offset() or 0) < end[message.partition() or 0]:
                batch.append(message)
        if batch:
            yield batch
        positions = consumer.position([TopicPartition(topic, p) for p in pending])
        before = len(pending)
        for tp in positions:
            if tp.offset >= end[tp.partition]:
                pending.discard(tp.partition)
        now = clock()
        if messages or len(pending) < before:
            last_progress = now
        elif now - last_progress > idle_timeout:
            left = ", ".join(str(p) for p in sorted(pending))
            raise DlqToolError(
                f"no progress reading {topic} partition(s) {left} for {idle_timeout:g}s"
            )


# -- inspect ------------------------------------------------------------------------------


def inspect_dlq(
    base_conf: dict[str, str],
    topic: str = DEFAULT_DLQ_TOPIC,
    *,
    limit: int | None = None,
    samples: int = 3,
    max_value_chars: int = 200,
    timeout: float = 10.0,
) -> InspectSummary:
    """Scan ``topic`` from its beginning to its current end and summarise it.

    No consumer group offsets are read or written. ``limit`` stops after that
    many records (in partition order, per batch).
    """
    bootstrap = base_conf.get("bootstrap.servers", "?")
    consumer = Consumer(
        _client_config(base_conf, **_CONSUMER_SETTINGS, **{"group.id": "stream-dlq-inspect-unused"})
    )
    try:
        partitions = _partitions(consumer, topic, bootstrap, timeout)
        marks = _watermarks(consumer, topic, partitions, timeout)
        summary = InspectSummary(
            topic, samples_per_class=samples, max_value_chars=max_value_chars, partitions=marks
        )
        start = {p: low for p, (low, _) in marks.items()}
        end = {p: high for p, (_, high) in marks.items()}
        for batch in read_batches(consumer, topic, start, end, idle_timeout=timeout * 3):
            if limit is not None and summary.scanned + len(batch) >= limit:
                summary.add_batch(batch[: limit - summary.scanned])
                summary.limit_reached = True
                break
            summary.add_batch(batch)
        return summary
    except KafkaException as exc:
        raise DlqToolError(f"reading {topic} failed: {_kafka_reason(exc)}") from None
    finally:
        consumer.close()


# -- replay -------------------------------------------------------------------------------


class _DeliveryFailures:
    """Failed deliveries by source partition: earliest failed DLQ offset and first reason."""

    def __init__(self) -> None:
        self.earliest: dict[int, int] = {}
        self.count = 0
        self.first_error: str | None = None

    def on_delivery(self, partition: int, offset: int, err: KafkaError | None, _: Message) -> None:
        if err is None:
            return
        self.count += 1
        if self.first_error is None:
            self.first_error = err.str()
        if offset < self.earliest.get(partition, offset + 1):
            self.earliest[partition] = offset


def replay_dlq(
    base_conf: dict[str, str],
    *,
    target: str,
    topic: str = DEFAULT_DLQ_TOPIC,
    record_filter: ReplayFilter | None = None,
    group: str = DEFAULT_REPLAY_GROUP,
    rate: float | None = None,
    dry_run: bool = False,
    allow_replayed: bool = False,
    force: bool = False,
    timeout: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> ReplayReport:
    """Send matching DLQ records back to ``target``; see the module docstring for guarantees.

    Reading starts at ``group``'s committed offsets (or the beginning) and
    stops at the end offsets seen at start. After each batch the producer is
    flushed and, if every record was acknowledged, the batch's offsets are
    committed. On a delivery failure the offsets stop before the first failed
    record of each partition and the run ends (records after it in the same
    batch that did get through may be sent again by the next run).
    ``dry_run`` reads and counts only: nothing is produced or committed.
    Records whose event was already delivered (:func:`was_delivered`) are refused
    unless ``force``.
    """
    if target == topic:
        raise DlqToolError(f"refusing to replay {topic} into itself; --to must be another topic")
    chosen = record_filter or ReplayFilter()
    bootstrap = base_conf.get("bootstrap.servers", "?")
    report = ReplayReport(source=topic, target=target, group=group, dry_run=dry_run)
    consumer = Consumer(_client_config(base_conf, **_CONSUMER_SETTINGS, **{"group.id": group}))
    producer: Producer | None = None
    try:
        partitions = _partitions(consumer, topic, bootstrap, timeout)
        target_partitions = len(_partitions(consumer, target, bootstrap, timeout))
        marks = _watermarks(consumer, topic, partitions, timeout)
        start = _resume_offsets(consumer, topic, marks, timeout)
        end = {p: high for p, (_, high) in marks.items()}
        if not dry_run:
            producer = Producer(_client_config(base_conf, **_PRODUCER_SETTINGS))
        pacer = RatePacer(rate, clock=clock, sleep=sleep) if rate else None
        batch_size = _BATCH if rate is None else max(1, min(_BATCH, int(rate)))
        target_bytes = target.encode()
        for batch in read_batches(
            consumer, topic, start, end, batch_size=batch_size, idle_timeout=timeout * 3
        ):
            failures = _DeliveryFailures()
            for message in batch:
                report.scanned += 1
                original = message.headers()
                fields = dlq_fields(original)
                if not chosen.matches(fields):
                    continue
                report.matched += 1
                if fields.replayed is not None and not allow_replayed:
                    report.skipped_already_replayed += 1
                    continue
                if not force and was_delivered(fields):
                    report.refused_delivered += 1
                    continue
                if producer is None:
                    report.replayed += 1
                    continue
                if pacer is not None:
                    pacer.wait()
                partition = -1
                if fields.original_topic == target_bytes:
                    partition = _original_partition(fields.original_partition, target_partitions)
                _produce(
                    producer,
                    target,
                    message,
                    replay_headers(original, replay_count(fields.replayed)),
                    partition,
                    functools.partial(
                        failures.on_delivery, message.partition() or 0, message.offset() or 0
                    ),
                )
                report.replayed += 1
            if producer is None:
                continue
            remaining = producer.flush(timeout * 3)
            if remaining:
                raise DlqToolError(
                    f"{remaining} record(s) to {target} were not acknowledged within "
                    f"{timeout * 3:g}s; nothing from this batch was committed"
                )
            report.failed += failures.count
            report.replayed -= failures.count
            if failures.first_error and report.first_error is None:
                report.first_error = failures.first_error
            _commit(consumer, topic, batch, failures.earliest)
            if failures.count:
                break
        return report
    except KafkaException as exc:
        raise DlqToolError(f"replay from {topic} stopped: {_kafka_reason(exc)}") from None
    finally:
        if producer is not None:
            producer.flush(timeout)
        consumer.close()


def _resume_offsets(
    consumer: Consumer, topic: str, marks: dict[int, tuple[int, int]], timeout: float
) -> dict[int, int]:
    """Where the group left off per partition, clamped to the retained range."""
    committed = consumer.committed([TopicPartition(topic, p) for p in marks], timeout=timeout)
    start: dict[int, int] = {}
    for tp in committed:
        low, high = marks[tp.partition]
        offset = tp.offset if tp.offset >= 0 else low
        start[tp.partition] = min(max(offset, low), high)
    return start


def _original_partition(raw: bytes, target_partitions: int) -> int:
    try:
        partition = int(raw)
    except ValueError:
        return -1
    return partition if 0 <= partition < target_partitions else -1


def _produce(
    producer: Producer,
    target: str,
    message: Message,
    headers: list[tuple[str, bytes | None]],
    partition: int,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    ts_type, ts = message.timestamp()
    kwargs: dict[str, Any] = {
        "key": message.key(),
        "value": message.value(),
        "headers": headers,
        "timestamp": 0 if ts_type == TIMESTAMP_NOT_AVAILABLE else max(ts, 0),
        "on_delivery": on_delivery,
    }
    if partition >= 0:
        kwargs["partition"] = partition
    while True:
        try:
            producer.produce(target, **kwargs)
            return
        except BufferError:
            producer.poll(0.1)  # local queue full: let deliveries drain


def _commit(
    consumer: Consumer, topic: str, batch: list[Message], failed_from: dict[int, int]
) -> None:
    """Commit past every record of ``batch``, but not past a partition's first failure."""
    next_offsets: dict[int, int] = {}
    for message in batch:
        next_offsets[message.partition() or 0] = (message.offset() or 0) + 1
    for partition, offset in failed_from.items():
        next_offsets[partition] = offset
    consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in sorted(next_offsets.items())],
        asynchronous=False,
    )
