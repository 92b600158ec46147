"""Partition ownership: which input partitions this worker owns, since when, at what state.

Every assignment, revocation, loss and rewind bumps an *epoch*; each batch carries
the epoch it was fetched in. Between agents a batch is checked against the current
epoch (:meth:`Ownership.check`): records of a partition the worker no longer owns,
or owns again since a later epoch (it was rewound, or revoked and re-assigned), are
dropped wherever the batch is in the chain, so nothing is processed or committed
for a partition after it went away — its new owner replays it from the last commit.

Assigning a partition restores its window state from the changelog first
(:meth:`Ownership.restore`); the changelog also says up to which input offset that
state already counts events (``state_offsets``), so records replayed after a crash
between the changelog flush and the offset commit are not counted twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from stream.checkpoint import STATE_OFFSET_KEY, Checkpointer
from stream.errors import FatalError
from stream.kafka.pausing import PartitionPauser
from stream.observability import metrics
from stream.runtime.work import WorkBatch
from stream.stages.correlate import Correlator

log = logging.getLogger(__name__)

ChangelogReader = Callable[[int], Iterable[tuple[bytes, bytes | None]]]


class Ownership:
    """Owned partitions, their epochs and restored-state offsets."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        correlator: Correlator,
        checkpointer: Checkpointer,
        pauser: PartitionPauser,
        read_changelog: ChangelogReader,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._correlator = correlator
        self._checkpointer = checkpointer
        self._pauser = pauser
        self._read_changelog = read_changelog
        #: partition -> epoch at which it was (last) assigned or rewound
        self.assigned: dict[int, int] = {}
        self.epoch = 0
        #: partition -> input offset the restored window state already reflects
        self.state_offsets: dict[int, int] = {}

    # -- batches in flight ------------------------------------------------------------------------

    def check(self, work: WorkBatch) -> None:
        """Drop the batch's records of partitions not owned since before it was fetched."""
        if work.epoch == self.epoch:
            return
        assigned = self.assigned
        dead = {p for p in set(work.partitions) if (e := assigned.get(p)) is None or e > work.epoch}
        if dead - work.dead:
            work.drop_partitions(dead)

    # -- assignment -------------------------------------------------------------------------------

    def assign(self, partitions: list[int]) -> None:
        self.epoch += 1
        for p in partitions:
            self.restore(p)
            self.assigned[p] = self.epoch
            self._checkpointer.assigned.add(p)
        # Before fetching starts: reclaim this worker's own acknowledged progress on
        # partitions it gets back, and measure the replay (stream_replayed_records).
        self._checkpointer.resume(partitions, self.state_offsets)
        self._pauser.assigned(partitions)
        metrics.assigned_partitions.set(len(self.assigned))

    def drop(self, partitions: list[int]) -> None:
        """Forget revoked or lost partitions (after the caller checkpointed what it could)."""
        self.epoch += 1
        for p in partitions:
            self.assigned.pop(p, None)
            self.state_offsets.pop(p, None)
            self._checkpointer.assigned.discard(p)
            self._checkpointer.forget([p])
            self._checkpointer.committed.pop(p, None)
            self._correlator.drop_partition(p)
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(self._topic, str(p))
        self._pauser.revoked(partitions)
        metrics.assigned_partitions.set(len(self.assigned))

    def restore(self, partition: int) -> None:
        """Window state of ``partition`` from its changelog partition."""
        entries: list[tuple[bytes, bytes | None]] = []
        state_offset: int | None = None
        for key, value in self._read_changelog(partition):
            if key == STATE_OFFSET_KEY:
                state_offset = int(value) if value else None
            else:
                entries.append((key, value))
        self._correlator.restore(partition, entries)
        if state_offset is not None:
            self.state_offsets[partition] = state_offset
        log.info(
            "restored window state of partition %d: %d changelog entries, state at offset %s",
            partition,
            len(entries),
            state_offset,
        )

    def progressed(self, nexts: dict[int, int]) -> None:
        """Offsets were recorded: restored state no longer needs its replay guard there."""
        if self.state_offsets:
            for p, nxt in nexts.items():
                if nxt >= self.state_offsets.get(p, nxt + 1):
                    del self.state_offsets[p]

    # -- going back -------------------------------------------------------------------------------

    def rewind_to_last_commit(self, partitions: list[int]) -> None:
        """Forget everything since the last commit: window state from the changelog and
        input positions from the committed offsets (after an aborted transaction)."""
        for p in partitions:
            self._checkpointer.forget([p])
            self.state_offsets.pop(p, None)
            self._correlator.drop_partition(p)
            self.restore(p)
        self.seek_back({}, partitions)

    def seek_back(self, positions: dict[int, int], partitions: list[int] | None = None) -> None:
        """Seek ``partitions`` (default: all owned) back to ``positions`` or, for partitions
        without one, to the next unprocessed record; drop every batch fetched before."""
        targets = list(self.assigned) if partitions is None else partitions
        unknown = []
        checkpointer = self._checkpointer
        for p in targets:
            if p in positions:
                continue
            known = checkpointer.pending.get(p, checkpointer.committed.get(p))
            if known is None:
                unknown.append(p)
            else:
                positions[p] = known
        if unknown:
            positions.update(self._committed_positions(unknown))
        self.epoch += 1
        for p in self.assigned:
            self.assigned[p] = self.epoch
        try:
            for p in targets:
                self._consumer.seek(TopicPartition(self._topic, p, positions[p]))
        except KafkaException as exc:
            raise FatalError(f"cannot seek {self._topic} back: {exc.args[0]}") from None

    def _committed_positions(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets; the beginning where none (auto.offset.reset)."""
        tps = [TopicPartition(self._topic, p) for p in partitions]
        try:
            committed = self._consumer.committed(tps, timeout=10)
        except KafkaException as exc:
            raise FatalError(f"cannot read committed offsets: {exc.args[0]}") from None
        return {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_BEGINNING for tp in committed}
