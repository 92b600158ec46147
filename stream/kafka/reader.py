"""Group-less readers and offset queries.

Reference data and window-state changelogs must be read *completely* by every
worker that needs them, regardless of the consumer group's assignment, so
these readers ``assign()`` partitions explicitly and never commit.

The same few questions — "where does each partition end?", "what has this
group committed?", "give me these offset ranges" — are asked by the worker,
the benchmark harness and the tests; they are answered here, once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from stream.errors import TransientError
from stream.kafka.client import client_config

T = TypeVar("T")

#: Errors that only mean "ask again shortly": stale metadata just after a topic
#: was created, or a group coordinator that is still loading on a fresh broker.
#: The leader-epoch errors come from a KRaft broker whose metadata cache already
#: names a new partition's leader epoch while its replica manager has not applied
#: it yet (a CI run's ``stream bench`` died on UNKNOWN_LEADER_EPOCH right after
#: creating its output topics).
RETRIABLE_LOOKUP_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)

_READER_SETTINGS = {
    "group.id": "stream-reader-unused",  # required by librdkafka; nothing is committed
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 10_485_760,
}


def _consumer(conf: dict[str, str]) -> Consumer:
    return Consumer(client_config(conf, **_READER_SETTINGS))


def read_partition_to_end(
    conf: dict[str, str], topic: str, partition: int, timeout: float = 60.0
) -> Iterator[list[Message]]:
    """Yield batches of ``topic[partition]`` from the beginning to its current end."""
    ends = end_offsets(conf, topic, partitions=[partition])
    yield from read_range(conf, topic, ends, timeout=timeout)


class TopicTail:
    """Reads every partition of a topic from the beginning and keeps following it."""

    def __init__(self, conf: dict[str, str], topic: str) -> None:
        self.topic = topic
        self._consumer = _consumer(conf)
        metadata = self._consumer.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        partitions = sorted(info.partitions) if info is not None and info.error is None else []
        self._partitions = partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    @property
    def exists(self) -> bool:
        return bool(self._partitions)

    def end_offsets(self) -> dict[int, int]:
        ends: dict[int, int] = {}
        for p in self._partitions:
            ask = functools.partial(
                self._consumer.get_watermark_offsets, TopicPartition(self.topic, p), timeout=10
            )
            ends[p] = retry_lookup(ask)[1]
        return ends

    def poll(self, max_records: int = 10_000, timeout: float = 0.0) -> list[Message]:
        return [m for m in self._consumer.consume(max_records, timeout) if m.error() is None]

    def read_until_caught_up(self, timeout: float = 60.0) -> list[Message]:
        """Everything up to the end offsets seen at the start of the call."""
        targets = {p: end for p, end in self.end_offsets().items() if end > 0}
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        tps = [TopicPartition(self.topic, p) for p in targets]
        while tps:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {self.topic} to its end timed out")
            out.extend(self.poll(10_000, 0.5))
            positions = self._consumer.position(tps)
            tps = [tp for tp in positions if tp.offset < targets[tp.partition]]
        return out

    def close(self) -> None:
        self._consumer.close()


# -- consumed records -------------------------------------------------------------------------
# The client types Message.partition() and offset() as optional (a Message built in Python
# may lack them); on a record a consumer returned both are always set. These helpers say so
# once, for the type checker only: they return exactly what the Message returns.


def partition_of(message: Message) -> int:
    """The partition of a record a consumer returned."""
    return message.partition()  # type: ignore[return-value]


def offset_of(message: Message) -> int:
    """The offset of a record a consumer returned."""
    return message.offset()  # type: ignore[return-value]


def record_partitions(messages: Iterable[Message]) -> list[int]:
    """:func:`partition_of` of each record, without a call per record (hot paths)."""
    return [m.partition() for m in messages]  # type: ignore[misc]


def record_offsets(messages: Iterable[Message]) -> list[int]:
    """:func:`offset_of` of each record, without a call per record (hot paths)."""
    return [m.offset() for m in messages]  # type: ignore[misc]


# -- offsets ----------------------------------------------------------------------------------


def is_retriable_lookup_error(exc: KafkaException) -> bool:
    """True when a failed offset or metadata lookup is worth asking again shortly."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (
        error.code() in RETRIABLE_LOOKUP_ERRORS or error.retriable()
    )


def retry_lookup(call: Callable[[], T], timeout: float = 30.0) -> T:
    """``call()``, retried for up to ``timeout`` s while it fails with one of
    :data:`RETRIABLE_LOOKUP_ERRORS` or an error librdkafka flags as retriable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            if not is_retriable_lookup_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def partitions_of(admin: AdminClient, topic: str, timeout: float = 10.0) -> list[int]:
    """The partition ids of ``topic`` (empty while it does not exist)."""
    info = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    return sorted(info.partitions) if info is not None and info.error is None else []


def end_offsets(
    conf: dict[str, Any],
    topic: str,
    *,
    committed_only: bool = False,
    partitions: Iterable[int] | None = None,
    admin: AdminClient | None = None,
    timeout: float = 30.0,
) -> dict[int, int]:
    """Per partition: the high watermark, or with ``committed_only`` the last stable
    offset (the end a ``read_committed`` reader sees while a transaction is open)."""
    admin = admin or AdminClient(client_config(conf))
    parts = list(partitions) if partitions is not None else partitions_of(admin, topic)
    if not parts:
        return {}
    level = IsolationLevel.READ_COMMITTED if committed_only else IsolationLevel.READ_UNCOMMITTED
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in parts}  # type: ignore[no-untyped-call]

    def ask() -> dict[int, int]:
        futures = admin.list_offsets(specs, isolation_level=level, request_timeout=10)
        return {tp.partition: f.result().offset for tp, f in futures.items()}

    return retry_lookup(ask, timeout)


def committed_offsets(
    conf: dict[str, Any],
    group: str,
    topic: str,
    partitions: Iterable[int] | None = None,
    *,
    timeout: float = 30.0,
) -> dict[int, int]:
    """``group``'s committed next-offset per partition; partitions with no commit are absent."""
    consumer = Consumer(client_config(conf, **{"group.id": group, "enable.auto.commit": False}))
    try:
        if partitions is None:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            partitions = sorted(metadata.partitions) if metadata is not None else []
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return {}
        got = retry_lookup(lambda: consumer.committed(tps, timeout=10), timeout)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    finally:
        consumer.close()


# -- ranges -----------------------------------------------------------------------------------


def read_range(
    conf: dict[str, Any],
    topic: str,
    ends: Mapping[int, int],
    starts: Mapping[int, int] | None = None,
    *,
    read_committed: bool = True,
    timeout: float = 60.0,
    **settings: Any,
) -> Iterator[list[Message]]:
    """Yield batches of ``topic`` from ``starts`` (default: the beginning) up to ``ends``
    (exclusive) on every partition in ``ends``; records at or past a partition's end are
    dropped. Raises :class:`TransientError` when the range is not read within ``timeout``.
    """
    begin = dict(starts or {})
    todo = {p: end for p, end in ends.items() if end > begin.get(p, 0)}
    if not todo:
        return
    consumer = Consumer(
        client_config(
            conf,
            **_READER_SETTINGS,
            **{"isolation.level": "read_committed" if read_committed else "read_uncommitted"},
            **settings,
        )
    )
    try:
        if starts is None:
            # A partition whose records are all deleted (retention, compaction of a
            # whole segment) has nothing to read even though its end is past 0.
            for p in list(todo):
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if low >= todo[p]:
                    del todo[p]
        consumer.assign([TopicPartition(topic, p, begin.get(p, OFFSET_BEGINNING)) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic} up to {dict(ends)} timed out")
            # Short polls: with fewer records than the batch size, a long timeout is pure wait.
            batch = [
                m
                for m in consumer.consume(10_000, 0.05)
                if m.error() is None and offset_of(m) < todo.get(partition_of(m), -1)
            ]
            if batch:
                yield batch
            # position() counts transaction markers and compacted gaps, unlike record offsets.
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
    finally:
        consumer.close()


def read_to_end(
    conf: dict[str, Any], topic: str, *, read_committed: bool = True, timeout: float = 60.0
) -> list[Message]:
    """Every record of ``topic`` up to its end as of the call.

    With ``read_committed`` the end is the last stable offset, once any open
    transaction has been resolved (waited for, within ``timeout``), so records of
    aborted transactions are never returned.
    """
    deadline = time.monotonic() + timeout
    ends = end_offsets(conf, topic, committed_only=read_committed)
    if read_committed:
        while end_offsets(conf, topic) != ends and time.monotonic() < deadline:
            time.sleep(0.2)  # an open transaction: wait for its commit, abort or timeout
            ends = end_offsets(conf, topic, committed_only=True)
    left = max(deadline - time.monotonic(), 1.0)
    batches = read_range(conf, topic, ends, read_committed=read_committed, timeout=left)
    return [m for batch in batches for m in batch]
