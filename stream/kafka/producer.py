"""Output producer: batched, acknowledged before offsets are committed.

Delivery reports cost a Python callback per record, so the producer asks
librdkafka for reports on *failures only* (``delivery.report.only.error``);
``flush()`` then proves the rest were acknowledged. In ``exactly_once`` mode
the same producer is transactional and offsets travel inside the transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from stream.errors import CheckpointError, FatalError
from stream.kafka.client import client_config

log = logging.getLogger(__name__)

#: Throughput-oriented defaults; anything here can be overridden through ``Settings.kafka``.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "acks": "all",
    "enable.idempotence": True,
}


class OutputProducer:
    """Wraps a confluent Producer; counts failed deliveries between checkpoints."""

    def __init__(self, base_conf: dict[str, str], *, transactional_id: str | None = None) -> None:
        overrides: dict[str, Any] = dict(PRODUCER_DEFAULTS)
        overrides.update({k: v for k, v in base_conf.items() if k in PRODUCER_DEFAULTS})
        overrides["delivery.report.only.error"] = True
        overrides["on_delivery"] = self._on_delivery
        if transactional_id is not None:
            overrides["transactional.id"] = transactional_id
        self._producer = Producer(client_config(base_conf, **overrides))
        self.transactional = transactional_id is not None
        self._failures = 0
        self._first_failure: str | None = None
        self._produce = self._producer.produce

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures += 1
            if self._first_failure is None:
                self._first_failure = f"{msg.topic()}: {err.str()}"

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int = -1,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
    ) -> None:
        """Queue one record; waits for queue space instead of failing when the queue is full."""
        while True:
            try:
                self._produce(
                    topic, value, key, partition=partition, timestamp=timestamp, headers=headers
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def produce_values(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: list[list[tuple[str, bytes]] | None] | None = None,
    ) -> None:
        """Queue many records: the hot path's loop, kept free of per-record attribute lookups.

        ``headers`` (optional, aligned with ``values``) is only passed when some input
        record carried trace context; most batches take the header-less loop.
        """
        produce = self._produce
        if headers is None:
            for i, value in enumerate(values):
                try:
                    produce(topic, value, keys[i])
                except BufferError:
                    self._producer.poll(0.05)
                    self.produce(topic, value, keys[i])
            return
        for i, value in enumerate(values):
            self.produce(topic, value, keys[i], headers=headers[i])

    def poll(self) -> None:
        """Serve delivery callbacks without blocking."""
        self._producer.poll(0)

    def flush(self, timeout: float) -> None:
        """Wait until every queued record is acknowledged; raise CheckpointError otherwise."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise CheckpointError(f"{remaining} records not acknowledged within {timeout:.0f}s")
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self._failures:
            failures, first = self._failures, self._first_failure
            self._failures, self._first_failure = 0, None
            raise CheckpointError(f"{failures} records failed delivery (first: {first})")

    # -- transactions (exactly_once) --------------------------------------------------------

    def init_transactions(self, timeout: float = 30.0) -> None:
        self._producer.init_transactions(timeout)

    def begin(self) -> None:
        self._producer.begin_transaction()

    def commit_transaction(
        self, offsets: list[TopicPartition], group_metadata: object, timeout: float
    ) -> None:
        """Send offsets inside the transaction and commit it; abort and raise on failure."""
        try:
            self._producer.send_offsets_to_transaction(offsets, group_metadata, timeout)
            self._producer.commit_transaction(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.fatal():
                raise FatalError(f"transactional producer fenced or failed: {err.str()}") from None
            try:
                self._producer.abort_transaction(timeout)
            except KafkaException:
                log.exception("abort_transaction failed")
            raise CheckpointError(f"transaction commit failed: {err}") from None
        self._raise_failures()

    def abort(self, timeout: float = 30.0) -> None:
        self._producer.abort_transaction(timeout)

    def __len__(self) -> int:
        return len(self._producer)
