"""Checkpoint coordinator: the one place that decides when progress becomes durable.

Order, always: (1) window-state changes are written to the changelog,
(2) every queued output (enriched, correlations, DLQ, changelog) is flushed and
acknowledged by the broker, (3) the consumed offsets are committed — or, in
``exactly_once`` mode, (2)+(3) are one Kafka transaction that carries the
offsets. A failure in any step raises :class:`stream.errors.CheckpointError`
and nothing is committed, so a crash can only replay, never lose.

The window state also records, per partition, the input offset it reflects
(``STATE_OFFSET_KEY``). After a crash between (2) and (3) the state is ahead of
the committed offsets; the runner then skips re-applying those records to the
windows, so window results stay exact even in ``at_least_once`` mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Final, Literal, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition

from stream.errors import CheckpointError
from stream.kafka.producer import OutputProducer
from stream.observability import metrics

#: Changelog key of the per-partition "state reflects input up to offset" marker.
STATE_OFFSET_KEY: Final = b"\x00stream.input-offset"

Guarantee = Literal["at_least_once", "exactly_once"]


class StateSource(Protocol):
    """What the coordinator needs from the window engine."""

    def drain_changes(self, partition: int) -> list[tuple[bytes, bytes | None]]: ...


class Checkpointer:
    """Runs checkpoints every ``interval`` seconds or ``every`` records."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: OutputProducer,
        state: StateSource,
        changelog_topic: str,
        input_topic: str,
        guarantee: Guarantee,
        interval: float,
        every: int,
        flush_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._state = state
        self._changelog = changelog_topic
        self._input = input_topic
        self._guarantee = guarantee
        self._interval = interval
        self._every = every
        self._flush_timeout = flush_timeout
        self._clock = clock
        self._last = clock()
        self._since = 0
        #: Next offset to commit per input partition (processed, not yet committed).
        self.pending: dict[int, int] = {}
        #: Last committed next-offset per partition (for metrics and tests).
        self.committed: dict[int, int] = {}
        #: Partitions whose window state is drained at every checkpoint.
        self.assigned: set[int] = set()

    def record_progress(self, offsets: Mapping[int, int], records: int) -> None:
        self.pending.update(offsets)
        self._since += records

    def due(self) -> bool:
        return self._since >= self._every or (self._clock() - self._last) >= self._interval

    def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Make everything processed so far durable, then commit (only ``partitions`` if given)."""
        started = time.perf_counter()
        targets = (
            dict(self.pending)
            if partitions is None
            else {p: self.pending[p] for p in partitions if p in self.pending}
        )
        try:
            self._write_state(targets, self.assigned if partitions is None else set(partitions))
            offsets = [TopicPartition(self._input, p, off) for p, off in targets.items()]
            commit_started = time.perf_counter()
            if self._guarantee == "exactly_once":
                self._producer.commit_transaction(
                    offsets, self._consumer.consumer_group_metadata(), self._flush_timeout
                )
                self._producer.begin()
            else:
                self._producer.flush(self._flush_timeout)
                if offsets:
                    self._commit(offsets)
            metrics.commit_duration_seconds.observe(time.perf_counter() - commit_started)
        except CheckpointError:
            metrics.checkpoints_total.labels(outcome="failed").inc()
            raise
        for p, off in targets.items():
            self.committed[p] = off
            if self.pending.get(p) == off:
                del self.pending[p]
        self._since = 0
        self._last = self._clock()
        metrics.checkpoints_total.labels(outcome="ok").inc()
        metrics.checkpoint_duration_seconds.observe(time.perf_counter() - started)

    def _write_state(self, targets: Mapping[int, int], drained: set[int]) -> None:
        produce = self._producer.produce
        for p in drained | targets.keys():
            for key, value in self._state.drain_changes(p):
                produce(self._changelog, value, key, partition=p)
        for p, next_offset in targets.items():
            produce(self._changelog, b"%d" % next_offset, STATE_OFFSET_KEY, partition=p)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise CheckpointError(f"offset commit failed: {exc.args[0]}") from None
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            raise CheckpointError(f"offset commit failed for {failed[0]}: {failed[0].error}")

    def forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self.pending.pop(p, None)
