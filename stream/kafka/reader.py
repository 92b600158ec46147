"""Group-less readers: whole-topic tails and read-to-end of one partition.

Reference data and window-state changelogs must be read *completely* by every
worker that needs them, regardless of the consumer group's assignment, so
these readers ``assign()`` partitions explicitly and never commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from stream.errors import TransientError
from stream.kafka.client import client_config

_READER_SETTINGS = {
    "group.id": "stream-reader-unused",  # required by librdkafka; nothing is committed
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "fetch.max.bytes": 52_428_800,
}


def _consumer(conf: dict[str, str]) -> Consumer:
    return Consumer(client_config(conf, **_READER_SETTINGS))


def read_partition_to_end(
    conf: dict[str, str], topic: str, partition: int, timeout: float = 60.0
) -> Iterator[list[Message]]:
    """Yield batches of ``topic[partition]`` from the beginning to its current end."""
    consumer = _consumer(conf)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high <= low:
            return
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic}[{partition}] to offset {high} timed out")
            # Short polls: with fewer records than the batch size, a long timeout is pure wait.
            batch = [m for m in consumer.consume(10_000, 0.05) if m.error() is None]
            if batch:
                yield batch
            # position() counts transaction markers and compacted gaps, unlike record offsets.
            (position,) = consumer.position([TopicPartition(topic, partition)])
            if position.offset >= high:
                return
    finally:
        consumer.close()


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
        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self._partitions
        }

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
