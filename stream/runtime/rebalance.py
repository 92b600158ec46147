"""Commits and partition changes: checkpoints, transaction recovery, rebalance callbacks.

The rebalance callbacks run inside ``consume()`` (under the runner lock). Revocation
checkpoints first — exactly_once commits the whole open transaction, at_least_once
just the revoked partitions' offsets — then forgets the partitions; assignment
restores window state before the partition's first batch. An aborted transaction
rewinds every owned partition to its last commit instead of failing
(:meth:`Commits.recover`); a lost partition (session expired) drops the open
transaction with it.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Protocol

from confluent_kafka import Consumer, TopicPartition

from stream.checkpoint import Checkpointer
from stream.errors import FatalError, StreamError
from stream.kafka.producer import (
    OutputProducer,
    ProducerFencedError,
    ProducerResetNeeded,
    TransactionAbortedError,
)
from stream.observability import metrics
from stream.runtime.ownership import Ownership

log = logging.getLogger(__name__)

#: More transaction recoveries than this within RECOVERY_WINDOW_S stop the worker.
MAX_RECOVERIES: Final = 5
RECOVERY_WINDOW_S: Final = 300.0
#: Seconds a checkpoint on revocation may keep retrying before the partitions go anyway.
REVOKE_CHECKPOINT_WAIT_S: Final = 10.0


class _Runner(Protocol):
    @property
    def failed(self) -> BaseException | None: ...


class Commits:
    """Checkpoints and what partition changes do to them."""

    def __init__(
        self,
        runner: _Runner,
        checkpointer: Checkpointer,
        ownership: Ownership,
        producer: OutputProducer,
        *,
        input_topic: str,
        exactly_once: bool,
        static_membership: bool,
    ) -> None:
        self._runner = runner
        self._checkpointer = checkpointer
        self._ownership = ownership
        self._producer = producer
        self._input = input_topic
        self._eos = exactly_once
        #: With a group.instance.id, a fenced producer means a successor took over.
        self._static = static_membership
        self._recoveries: list[float] = []
        #: A recovery that could not be done: nothing is committed any more.
        self.failed: BaseException | None = None

    def checkpoint(self, partitions: list[int] | None = None, wait: float = 0.0) -> bool:
        """Checkpoint; an aborted transaction rewinds to the last commit instead of failing."""
        try:
            return self._checkpointer.checkpoint(partitions, wait=wait)
        except TransactionAbortedError as exc:
            keep = [p for p in self._ownership.assigned if p not in (partitions or ())]
            self.recover(exc, keep)
            return False

    def recover(self, error: TransactionAbortedError, partitions: list[int]) -> None:
        """Start over from the last commit after the transaction broke (exactly_once).

        Aborted: just rewind. Producer unusable (its transaction timed out on the broker
        during an outage, or it is in an error state): replace it first. Fenced while
        other instances may share our transactional id (static membership): a successor
        took over, so stop. Too many recoveries in a row: stop too.
        """
        try:
            if isinstance(error, ProducerFencedError) and self._static:
                raise FatalError(str(error))
            now = time.monotonic()
            self._recoveries = [t for t in self._recoveries if now - t < RECOVERY_WINDOW_S]
            self._recoveries.append(now)
            if len(self._recoveries) > MAX_RECOVERIES:
                raise FatalError(
                    f"{len(self._recoveries)} transaction recoveries in "
                    f"{RECOVERY_WINDOW_S:.0f}s; last: {error}"
                )
            if isinstance(error, ProducerResetNeeded):
                log.warning("%s; replacing the producer, rewinding to the last commit", error)
                self._producer.reset()
            else:
                log.warning("%s; rewinding every owned partition to its last commit", error)
            metrics.errors_total.labels(stage="commit", error_class=type(error).__name__).inc()
            self._ownership.rewind_to_last_commit(partitions)
        except StreamError as exc:
            self.failed = exc
            raise

    # -- rebalance callbacks (run inside consume(), under the runner lock) ----------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._eos and self._runner.failed is None and self._ownership.assigned:
            # Commit the open transaction first: restoring can take longer than
            # transaction.timeout.ms, after which the broker would abort it.
            self.checkpoint(wait=REVOKE_CHECKPOINT_WAIT_S)
        self._ownership.assign([tp.partition for tp in partitions])
        metrics.rebalances_total.labels(kind="assign").inc()
        log.info("assigned partitions %s of %s", [tp.partition for tp in partitions], self._input)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions]
        try:
            if self._runner.failed is None:
                # exactly_once: one transaction holds every partition's outputs, so it
                # is committed whole; at_least_once commits just the revoked offsets.
                done = self.checkpoint(
                    None if self._eos else revoked, wait=REVOKE_CHECKPOINT_WAIT_S
                )
                if not done:
                    log.warning(
                        "could not commit revoked partitions %s; their new owner replays from "
                        "the last commit",
                        revoked,
                    )
        except StreamError:
            log.exception(
                "checkpoint on revocation failed; the new owner replays from the last commit"
            )
        self._ownership.drop(revoked)
        metrics.rebalances_total.labels(kind="revoke").inc()
        log.info("revoked partitions %s of %s", revoked, self._input)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = [tp.partition for tp in partitions]
        self._checkpointer.forget(lost)
        self._ownership.drop(lost)
        if self._eos and self._runner.failed is None:
            # The open transaction holds outputs of the lost partitions, which their new
            # owner is producing too: drop it (a new producer instance aborts it for
            # sure, whatever state the session loss left the old one in) and redo the
            # partitions still owned.
            self.recover(
                ProducerResetNeeded(f"partitions {lost} lost"), list(self._ownership.assigned)
            )
        metrics.rebalances_total.labels(kind="lost").inc()
        log.warning("lost partitions %s of %s without commit", lost, self._input)
