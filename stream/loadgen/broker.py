"""The load generator's few dealings with the cluster besides producing events.

* ``check_broker`` asks for metadata once, with a timeout, through a client whose
  librdkafka log goes nowhere: a missing broker becomes one readable
  ``BrokerUnavailableError`` instead of a flood of connect errors.
* ``ensure_topic`` creates the event topic when it does not exist, so a first
  benchmark run needs no separate set-up step.
* ``seed_reference_data`` writes ``reference.services`` from
  ``stream.loadgen.reference`` so enrichment has something to join against.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream.errors import BrokerUnavailableError
from stream.loadgen.reference import reference_data

REFERENCE_TOPIC: Final = "reference.services"

_quiet_logger = logging.getLogger("stream.loadgen.librdkafka")
_quiet_logger.addHandler(logging.NullHandler())
_quiet_logger.propagate = False


def _ignore_error(_error: KafkaError) -> None:
    """librdkafka retries on its own; failures surface as timeouts or delivery errors."""


def quiet_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Client config that keeps librdkafka's own logging and error callbacks silent."""
    return {
        "bootstrap.servers": bootstrap,
        "logger": _quiet_logger,
        "error_cb": _ignore_error,
        **extra,
    }


def check_broker(bootstrap: str, timeout: float = 5.0) -> dict[str, int]:
    """Topic name -> partition count, or ``BrokerUnavailableError`` if nothing answers."""
    admin = AdminClient(quiet_config(bootstrap))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {bootstrap} within {timeout:g}s "
            f"({exc.args[0].str() if exc.args else exc})"
        ) from None
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> bool:
    """Create ``topic`` with ``partitions`` partitions unless it exists; True if created."""
    if topic in check_broker(bootstrap):
        return False
    admin = AdminClient(quiet_config(bootstrap))
    future = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=timeout)[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise BrokerUnavailableError(f"cannot create topic {topic!r}: {exc}") from None
    return True


def seed_reference_data(
    bootstrap: str, topic: str = REFERENCE_TOPIC, n_services: int = 50, timeout: float = 30.0
) -> int:
    """Write one ``reference.services`` record per known service; returns how many.

    Key is the service name, value ``{"team", "tier", "owner"}``. About one
    service in ten is left out so the "unknown service" enrichment path is used.
    """
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error.str())

    producer = Producer(quiet_config(bootstrap, acks="all", on_delivery=on_delivery))
    records = reference_data(n_services)
    for service, info in records.items():
        producer.produce(topic, orjson.dumps(info), service.encode())
    remaining = producer.flush(timeout)
    if remaining or failures:
        reason = failures[0] if failures else f"{remaining} records not acknowledged"
        raise BrokerUnavailableError(f"seeding {topic!r} failed: {reason}")
    return len(records)
