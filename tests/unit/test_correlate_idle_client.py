"""Which partitions the runner holds busy for records still in the client (no broker).

:func:`stream.runner.client_ahead` compares librdkafka's cached high watermark with the
consumer position; a fake consumer stands in for both (their real behaviour — the
position moving past transaction markers, no position before the first record of an
assignment — was checked against the Kafka 4.3 broker with confluent-kafka 2.12).
"""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from stream.runner import client_ahead


class FakeConsumer:
    def __init__(self, positions: dict[int, int], highs: dict[int, int]) -> None:
        self.positions = positions
        self.highs = highs
        self.fail = False

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        if self.fail:
            raise KafkaException("closed")
        return [TopicPartition(tp.topic, tp.partition, self.positions[tp.partition]) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        assert cached, "a local look-up on every tick, never a broker request"
        return (0, self.highs[tp.partition])


def ahead(fake: FakeConsumer, owned: list[int], committed: dict[int, int] | None = None) -> Any:
    return client_ahead(cast(Consumer, fake), "events", owned, committed or {})


def test_a_partition_with_records_beyond_its_position_is_busy() -> None:
    fake = FakeConsumer(positions={0: 100, 1: 250, 2: 40}, highs={0: 100, 1: 900, 2: 41})
    assert ahead(fake, [0, 1, 2]) == {1, 2}


def test_unknown_positions_count_from_the_committed_offset() -> None:
    fake = FakeConsumer(
        positions={0: OFFSET_INVALID, 1: OFFSET_INVALID, 2: OFFSET_INVALID},
        highs={0: 500, 1: 500, 2: 500},
    )
    # 0: restored at 200, 300 records waiting; 1: restored at its end; 2: nothing known
    assert ahead(fake, [0, 1, 2], committed={0: 200, 1: 500}) == {0}


def test_an_unknown_high_watermark_holds_nothing() -> None:
    fake = FakeConsumer(positions={0: 10}, highs={0: OFFSET_INVALID})
    assert ahead(fake, [0]) == set()


def test_no_partitions_or_a_closed_consumer_hold_nothing() -> None:
    fake = FakeConsumer(positions={0: 1}, highs={0: 5})
    assert ahead(fake, []) == set()
    fake.fail = True
    assert ahead(fake, [0]) == set()
