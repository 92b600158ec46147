"""What the harness asks of the cluster: topics, offsets, and reading ranges back.

Every number the table reports about correctness comes from the broker, not
from the system under test: output counts are end offsets of the output topics,
"committed" is the group's committed offsets, latencies are record timestamps.

Output topics are created with ``message.timestamp.type=LogAppendTime`` so a
record's timestamp is the moment the broker appended it, whatever timestamp
the producer set (Quix, for one, stamps outputs with the event time).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import AdminClient

from stream.kafka.admin import TopicSpec, create_topics
from stream.kafka.reader import committed_offsets, end_offsets, read_range
from stream.loadgen.broker import quiet_config

LOG_APPEND_TIME: Final = {"message.timestamp.type": "LogAppendTime"}
COMPACTED: Final = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSet:
    """The topics and consumer group of one row (or of one latency run)."""

    prefix: str
    input: str
    reference: str
    partitions: int

    @property
    def enriched(self) -> str:
        return f"{self.prefix}.enriched"

    @property
    def correlations(self) -> str:
        return f"{self.prefix}.correlations"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def changelog(self) -> str:
        return f"{self.prefix}.window-state-changelog"

    @property
    def group(self) -> str:
        return f"{self.prefix}-group"

    def output_specs(self) -> list[TopicSpec]:
        """Outputs (append-time stamped) and the window-state changelog (compacted)."""
        p = self.partitions
        return [
            TopicSpec(self.enriched, p, LOG_APPEND_TIME),
            TopicSpec(self.correlations, p, LOG_APPEND_TIME),
            TopicSpec(self.dlq, p, LOG_APPEND_TIME),
            TopicSpec(self.changelog, p, COMPACTED),
        ]


@dataclass
class Cluster:
    """One admin client, kept for the whole run (offsets are asked for in tight loops)."""

    bootstrap: str
    _admin: AdminClient = field(init=False)
    _partitions: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._admin = AdminClient(self.conf)

    def close(self) -> None:
        """Nothing to release (kept so callers need not know)."""

    @property
    def conf(self) -> dict[str, Any]:
        """Client config with librdkafka's own logging silenced."""
        return quiet_config(self.bootstrap)

    # -- topics -----------------------------------------------------------------------------

    def create(self, specs: Iterable[TopicSpec], timeout: float = 60.0) -> None:
        """Create ``specs`` and wait until every partition has a leader."""
        specs = list(specs)
        create_topics(self.conf, specs, timeout=timeout)
        deadline = time.monotonic() + timeout
        for spec in specs:
            while self.partitions(spec.name, refresh=True) != spec.partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {spec.name} has no leaders after {timeout:g}s")
                time.sleep(0.1)

    def partitions(self, topic: str, *, refresh: bool = False) -> int:
        """Partition count of ``topic`` (0 while it does not exist or lacks leaders)."""
        if refresh or topic not in self._partitions:
            meta = self._admin.list_topics(topic=topic, timeout=10).topics.get(topic)
            ready = (
                meta is not None
                and meta.error is None
                and all(p.leader >= 0 for p in meta.partitions.values())
            )
            count = len(meta.partitions) if ready and meta is not None else 0
            if not count:
                return 0
            self._partitions[topic] = count
        return self._partitions[topic]

    def delete_matching(self, marker: str, timeout: float = 30.0) -> int:
        """Delete every topic whose name contains ``marker``; returns how many."""
        names = [t for t in self._admin.list_topics(timeout=10).topics if marker in t]
        if not names:
            return 0
        for future in self._admin.delete_topics(names, operation_timeout=timeout).values():
            with contextlib.suppress(KafkaException):
                future.result(timeout)
        return len(names)

    # -- offsets ----------------------------------------------------------------------------

    def end_offsets(self, topic: str) -> dict[int, int]:
        """High watermark per partition."""
        parts = range(self.partitions(topic))
        return end_offsets(self.conf, topic, partitions=parts, admin=self._admin)

    def total(self, *topics: str) -> int:
        """Records in ``topics`` (sum of end offsets; the bench topics are never truncated)."""
        return sum(sum(self.end_offsets(t).values()) for t in topics)

    def count(self, topic: str) -> int:
        """Records in ``topic`` as a ``read_committed`` consumer sees them: a transactional
        producer's topics hold commit markers, which take offsets (``total`` counts them)
        but are no records, and records of aborted transactions, which are not output."""
        return sum(len(batch) for batch in self.batches(topic, timeout=600))

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset per partition (absent: nothing committed)."""
        return committed_offsets(self.conf, group, topic, range(self.partitions(topic)))

    def fully_committed(self, group: str, topic: str) -> bool:
        committed = self.committed(group, topic)
        return all(committed.get(p, 0) >= end for p, end in self.end_offsets(topic).items())

    # -- reading ----------------------------------------------------------------------------

    def read(
        self,
        topic: str,
        start: Mapping[int, int] | None = None,
        end: Mapping[int, int] | None = None,
        timeout: float = 120.0,
    ) -> list[Message]:
        """Records of ``topic`` from ``start`` (default: the beginning) up to ``end``
        (default: the current end)."""
        return [m for batch in self.batches(topic, start, end, timeout) for m in batch]

    def batches(
        self,
        topic: str,
        start: Mapping[int, int] | None = None,
        end: Mapping[int, int] | None = None,
        timeout: float = 120.0,
    ) -> Iterator[list[Message]]:
        """Like ``read`` but batch by batch, for topics too big to hold at once."""
        ends = dict(end) if end is not None else self.end_offsets(topic)
        return read_range(self.conf, topic, ends, start, timeout=timeout)
