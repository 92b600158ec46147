"""How the output producer classifies transaction failures (exactly_once).

The confluent producer inside is replaced by a fake that raises the errors
librdkafka raises, so no broker is needed; what matters is which of our errors
comes out, because the runner decides from it whether to rewind, replace the
producer, or stop.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.errors import FatalError
from stream.kafka.producer import (
    OutputProducer,
    ProducerFencedError,
    ProducerResetNeeded,
    TransactionAbortedError,
)


class FakeTransactionalProducer:
    def __init__(self, send_error: KafkaError, abort_error: KafkaError | None) -> None:
        self.send_error = send_error
        self.abort_error = abort_error
        self.aborts = 0

    def send_offsets_to_transaction(self, *_args: Any) -> None:
        raise KafkaException(self.send_error)

    def abort_transaction(self, _timeout: float) -> None:
        self.aborts += 1
        if self.abort_error is not None:
            raise KafkaException(self.abort_error)


def producer_with(send_error: KafkaError, abort_error: KafkaError | None) -> OutputProducer:
    producer = OutputProducer({"bootstrap.servers": "127.0.0.1:1"}, transactional_id="t-1")
    producer._producer = FakeTransactionalProducer(send_error, abort_error)  # type: ignore[assignment]
    return producer


ABORTABLE = KafkaError(KafkaError._TIMED_OUT, "send offsets timed out", txn_requires_abort=True)


def test_abortable_error_aborts_and_asks_for_a_rewind() -> None:
    producer = producer_with(ABORTABLE, abort_error=None)
    with pytest.raises(TransactionAbortedError) as raised:
        producer.send_offsets([], object(), 1.0)
    assert not isinstance(raised.value, ProducerFencedError)
    assert producer._producer.aborts == 1  # type: ignore[attr-defined]


def test_abort_refused_because_fenced_means_replace_the_producer_not_crash() -> None:
    # The broker timed the transaction out during an outage and bumped the epoch:
    # the abort that follows a failed send_offsets is refused as fenced.
    fenced = KafkaError(KafkaError._FENCED, "This instance has been fenced by a newer instance")
    producer = producer_with(ABORTABLE, abort_error=fenced)
    with pytest.raises(ProducerFencedError, match="producer fenced"):
        producer.send_offsets([], object(), 1.0)


def test_abort_failing_otherwise_is_fatal() -> None:
    broken = KafkaError(KafkaError._INVALID_ARG, "nonsense")
    producer = producer_with(ABORTABLE, abort_error=broken)
    with pytest.raises(FatalError, match="transaction abort failed"):
        producer.send_offsets([], object(), 1.0)


def test_abort_refused_as_invalid_state_means_replace_the_producer() -> None:
    # The controller (and transaction coordinator) was cut off for longer than
    # transaction.timeout.ms: it aborted the transaction itself, and the client's abort
    # is refused as INVALID_TXN_STATE (three-node cluster, 20 s isolation).
    stale = KafkaError(
        KafkaError.INVALID_TXN_STATE,
        "Failed to end transaction: Broker: Producer attempted a transactional operation in an "
        "invalid state",
    )
    producer = producer_with(ABORTABLE, abort_error=stale)
    with pytest.raises(ProducerResetNeeded, match="replacing the producer"):
        producer.send_offsets([], object(), 1.0)
