"""Cluster checks and topic management (idempotent)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException

# The client documents these under confluent_kafka.admin but re-exports them implicitly
# (no __all__), which strict mypy reports; there is no other public path.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ClusterMetadata,
    NewPartitions,
    NewTopic,
)

from stream.errors import BrokerUnavailableError, FatalError
from stream.kafka.client import client_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def admin_client(conf: dict[str, str]) -> AdminClient:
    return AdminClient(client_config(conf))


def check_cluster(conf: dict[str, str], timeout: float = 10.0) -> ClusterMetadata:
    """Return cluster metadata, or raise one readable BrokerUnavailableError."""
    try:
        return admin_client(conf).list_topics(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() in (
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
        ):
            raise FatalError(
                f"authentication to {conf.get('bootstrap.servers')} failed: {err.str()}"
            ) from None
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {conf.get('bootstrap.servers')} within {timeout:.0f}s. "
            "Start one with `stream broker start`, or set STREAM_BOOTSTRAP_SERVERS."
        ) from None


def create_topics(
    conf: dict[str, str], specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = admin_client(conf)
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1, config=dict(s.config))
        for s in specs
        if s.name not in existing
    ]
    if not new:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise FatalError(f"cannot create topic {name}: {err}") from None
    return created


def partition_count(metadata: ClusterMetadata, topic: str) -> int | None:
    """Partitions of ``topic``, or None when it does not exist."""
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        return None
    return len(info.partitions)


def ensure_partitions(conf: dict[str, str], topic: str, count: int, timeout: float = 30.0) -> int:
    """Grow ``topic`` to at least ``count`` partitions; return how many it has then.

    Why: a worker's window-state changelog has one partition per input partition, and
    partitions can be added to the input topic while workers run — the worker assigned
    a new one adds the changelog's before it restores or writes state there. Workers
    racing to do it are fine (the broker refuses the second request as
    INVALID_PARTITIONS; the count is read again). Only all-topics metadata is asked
    for: a request naming the topic would create it again on a broker with auto-create.
    """
    admin = admin_client(conf)
    current = partition_count(admin.list_topics(timeout=timeout), topic)
    if current is None:
        raise FatalError(f"topic {topic} does not exist; create it with `stream topics create`")
    if current >= count:
        return current
    request = [NewPartitions(topic, count)]
    for future in admin.create_partitions(request, operation_timeout=timeout).values():
        try:
            future.result()
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.INVALID_PARTITIONS):
                raise FatalError(
                    f"cannot add partitions to {topic} ({current} -> {count}): {err}; "
                    "add them yourself or grant ALTER on the topic"
                ) from None
    log.info(
        "%s: %d partitions added (now %d, like the input topic)", topic, count - current, count
    )
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        info = metadata.topics.get(topic)
        parts = [] if info is None or info.error is not None else list(info.partitions.values())
        if len(parts) >= count and all(p.leader >= 0 for p in parts):
            return len(parts)
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"{topic} has no leader for {count} partitions yet")
        time.sleep(0.1)
