"""Checkpoint coordinator: the one place that decides when progress becomes durable.

Order, always: (1) window-state changes are written to the changelog,
(2) every queued output (enriched, correlations, DLQ, changelog) is flushed and
acknowledged by the broker, (3) the consumed offsets are committed — or, in
``exactly_once`` mode, (2)+(3) are one Kafka transaction that carries the
offsets. Nothing is committed unless everything before it is durable, so a
crash can only replay, never lose.

In ``at_least_once`` mode the periodic checkpoint is *pipelined*: it writes
the state (1), *seals* the producer's acknowledgement epoch and returns; the
batch loop keeps going, and (3) commits that checkpoint's offsets as soon as
every record of its epoch and the earlier ones is acknowledged (the order above
holds per checkpoint, only the wait moved off the loop). Checkpoints on
revocation and shutdown still flush and commit in place.

The window state also records, per partition, the input offset it reflects
(``STATE_OFFSET_KEY``). After a crash between (2) and (3) the state is ahead of
the committed offsets; the runner then skips re-applying those records to the
windows, so window results stay exact even in ``at_least_once`` mode.

What goes wrong, and what happens then:

* **Transient** — records not yet acknowledged within the flush timeout (broker
  slow, restarting or unreachable: librdkafka keeps retrying them; for a sealed
  checkpoint: not acknowledged within the flush timeout), an offset
  commit refused because the group is rebalancing (``ILLEGAL_GENERATION``,
  ``REBALANCE_IN_PROGRESS`` — a normal scale-out) or the coordinator moved. In
  ``at_least_once`` the checkpoint is *deferred*: nothing is committed, offsets
  stay pending, processing goes on (backpressure pauses fetching if the producer
  queue fills) and the next attempt comes after a full-jitter backoff
  (:mod:`stream.resilience.retry`). In ``exactly_once`` no record may be added to
  a transaction that is being committed, so the commit is retried in place
  (blocking) with the same backoff.
* **Transaction aborted** — e.g. the group moved on under an open transaction:
  its outputs are discarded, a new transaction is begun and
  :class:`TransactionAbortedError` tells the runner to rewind to the last commit.
* **Fatal** — a record failed delivery for good, a fenced producer or member,
  an authorization error, or transient failures for longer than
  ``give_up_after`` seconds. The coordinator is *poisoned*: it never commits
  again, so a worker stopping after the failure cannot commit past it.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from itertools import takewhile
from typing import Final, Literal, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.errors import CheckpointError, FatalError, StreamError, TransientError
from stream.kafka.producer import (
    AckEpoch,
    OutputProducer,
    ProducerResetNeeded,
    TransactionAbortedError,
)
from stream.observability import metrics
from stream.resilience.retry import RetryPolicy, next_delay, retry_call

log = logging.getLogger(__name__)

#: Changelog key of the per-partition "state reflects input up to offset" marker.
STATE_OFFSET_KEY: Final = b"\x00stream.input-offset"

Guarantee = Literal["at_least_once", "exactly_once"]

#: Backoff between deferred checkpoints (at_least_once); the give-up bound is separate.
DEFERRAL_BACKOFF: Final = RetryPolicy(
    initial=0.5, multiplier=2.0, max_delay=10.0, max_attempts=1_000_000, total_timeout=None
)
#: In-place retries of a transaction commit (exactly_once).
TRANSACTION_RETRY: Final = RetryPolicy(
    initial=0.2, multiplier=2.0, max_delay=5.0, max_attempts=1_000, total_timeout=60.0
)
#: librdkafka's own ``message.timeout.ms`` default: after that long a queued record fails.
GIVE_UP_AFTER_S: Final = 300.0

#: Commit errors that mean "not now" rather than "never".
_COMMIT_LATER: Final = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError.FENCED_MEMBER_EPOCH,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


class StateSource(Protocol):
    """What the coordinator needs from the window engine."""

    def drain_changes(self, partition: int) -> list[tuple[bytes, bytes | None]]: ...


class _Sealed:
    """A pipelined checkpoint: state written, offsets to commit once ``epoch`` is acknowledged."""

    __slots__ = ("epoch", "offsets", "sealed_at")

    def __init__(self, epoch: AckEpoch, offsets: dict[int, int], sealed_at: float) -> None:
        self.epoch = epoch
        self.offsets = offsets
        self.sealed_at = sealed_at


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
        flush_timeout: float = 5.0,
        give_up_after: float = GIVE_UP_AFTER_S,
        pipelined: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._state = state
        self._changelog = changelog_topic
        self._input = input_topic
        self._eos = guarantee == "exactly_once"
        #: Periodic checkpoints seal and commit later (at_least_once only).
        self._pipelined = pipelined and not self._eos
        #: Sealed checkpoints awaiting acknowledgement, oldest first.
        self._sealed: deque[_Sealed] = deque()
        self._interval = interval
        self._every = every
        self._flush_timeout = flush_timeout
        self._give_up_after = give_up_after
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._last = clock()
        self._since = 0
        #: consecutive deferred attempts, when the first of them happened, next try
        self._deferrals = 0
        self._deferred_since: float | None = None
        self._retry_at = 0.0
        #: Next offset to commit per input partition (processed, not yet committed).
        self.pending: dict[int, int] = {}
        #: Last committed next-offset per partition (for metrics and tests).
        self.committed: dict[int, int] = {}
        #: Partitions whose window state is drained at every checkpoint.
        self.assigned: set[int] = set()
        #: Set by a fatal failure; from then on nothing is ever committed.
        self.failed: StreamError | None = None

    def record_progress(self, offsets: Mapping[int, int], records: int) -> None:
        self.pending.update(offsets)
        self._since += records

    def due(self) -> bool:
        if self._clock() < self._retry_at:
            return False
        if self._sealed and self._sealed[0].epoch.done:
            return True  # a sealed checkpoint is acknowledged: commit it
        return self._seal_due()

    def _seal_due(self) -> bool:
        return self._since >= self._every or (self._clock() - self._last) >= self._interval

    @property
    def awaiting_acks(self) -> int:
        """Sealed checkpoints whose offsets wait for acknowledgements."""
        return len(self._sealed)

    def checkpoint(self, partitions: list[int] | None = None, *, wait: float = 0.0) -> bool:
        """Make everything processed so far durable, then commit (only ``partitions`` if given).

        Returns False when a transient failure deferred the commit (offsets stay
        pending); a pipelined checkpoint returns True once sealed, and commits when
        acknowledged (in this or a later call); ``wait`` > 0 keeps retrying for that
        many seconds first (final checkpoints on revocation and shutdown). Raises
        TransactionAbortedError (rewind) or, once poisoned, CheckpointError/FatalError.
        """
        if self.failed is not None:
            raise CheckpointError(f"not committing after an earlier failure: {self.failed}")
        deadline = self._clock() + wait
        pipelined = self._pipelined and partitions is None and wait <= 0
        while True:
            try:
                if pipelined:
                    self._attempt_pipelined()
                else:
                    self._attempt(partitions)
            except TransientError as exc:
                delay = self._defer(exc)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._sleep(min(delay, remaining))
                continue
            except TransactionAbortedError as exc:
                metrics.checkpoints_total.labels(outcome="aborted").inc()
                if not isinstance(exc, ProducerResetNeeded):
                    self._producer.begin()
                raise
            except StreamError as exc:
                self.failed = exc
                metrics.checkpoints_total.labels(outcome="failed").inc()
                raise
            return True

    def _attempt(self, partitions: list[int] | None) -> None:
        started = time.perf_counter()
        targets = (
            dict(self.pending)
            if partitions is None
            else {p: self.pending[p] for p in partitions if p in self.pending}
        )
        self._write_state(targets, self.assigned if partitions is None else set(partitions))
        offsets = [TopicPartition(self._input, p, off) for p, off in targets.items()]
        commit_started = time.perf_counter()
        if self._eos:
            self._commit_transaction(offsets)
        else:
            self._producer.flush(self._flush_timeout)
            if offsets:
                self._commit(offsets)
        metrics.commit_duration_seconds.observe(time.perf_counter() - commit_started)
        # Everything sealed before is flushed and covered by this commit.
        if partitions is None:
            self._sealed.clear()
        else:
            self._strip_sealed(partitions)
        self._committed(targets)
        self._since = 0
        self._last = self._clock()
        self._succeeded(time.perf_counter() - started)

    def _attempt_pipelined(self) -> None:
        """Seal a checkpoint when one is due; commit the newest fully acknowledged one."""
        if self._seal_due():
            snapshot = dict(self.pending)
            self._write_state(snapshot, self.assigned)
            self._sealed.append(_Sealed(self._producer.seal(), snapshot, self._clock()))
            self._since = 0
            self._last = self._clock()
        self._producer.check_failures()  # a record that failed for good poisons here
        ready = list(takewhile(lambda sealed: sealed.epoch.done, self._sealed))
        if not ready:
            oldest = self._sealed[0] if self._sealed else None
            if oldest is not None and self._clock() - oldest.sealed_at > self._flush_timeout:
                raise TransientError(
                    f"{oldest.epoch.outstanding} records not yet acknowledged after "
                    f"{self._clock() - oldest.sealed_at:.1f}s"
                )
            return
        targets: dict[int, int] = {}
        for sealed in ready:
            targets.update(sealed.offsets)  # later checkpoints carry later offsets
        offsets = [TopicPartition(self._input, p, off) for p, off in targets.items()]
        commit_started = time.perf_counter()
        if offsets:
            self._commit(offsets)
        metrics.commit_duration_seconds.observe(time.perf_counter() - commit_started)
        for _ in ready:
            self._sealed.popleft()
        self._committed(targets)
        self._succeeded(self._clock() - ready[-1].sealed_at)

    def _committed(self, targets: Mapping[int, int]) -> None:
        for p, off in targets.items():
            self.committed[p] = off
            if self.pending.get(p) == off:
                del self.pending[p]

    def _succeeded(self, duration: float) -> None:
        if self._deferred_since is not None:
            log.info(
                "checkpoint succeeded after %d deferred attempts over %.1fs",
                self._deferrals,
                self._last - self._deferred_since,
            )
        self._deferrals, self._deferred_since, self._retry_at = 0, None, 0.0
        metrics.checkpoints_total.labels(outcome="ok").inc()
        metrics.checkpoint_duration_seconds.observe(duration)

    def _defer(self, exc: TransientError) -> float:
        """Count a deferred attempt; return the backoff delay, or poison after the time budget."""
        now = self._clock()
        if self._deferred_since is None:
            self._deferred_since = now
        self._deferrals += 1
        elapsed = now - self._deferred_since
        metrics.checkpoints_total.labels(outcome="deferred").inc()
        metrics.retries_total.labels("checkpoint").inc()
        if elapsed > self._give_up_after:
            self.failed = CheckpointError(
                f"checkpoints failing for {elapsed:.0f}s ({self._deferrals} attempts); last: {exc}"
            )
            metrics.checkpoints_total.labels(outcome="failed").inc()
            raise self.failed
        delay = next_delay(DEFERRAL_BACKOFF, self._deferrals, elapsed, exc, self._rand) or 0.0
        self._retry_at = now + delay
        if self._deferrals == 1 or self._deferrals % 10 == 0:
            log.warning(
                "checkpoint deferred (attempt %d, retry in %.1fs; offsets stay pending): %s",
                self._deferrals,
                delay,
                exc,
            )
        return delay

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
            raise _commit_error(exc.args[0] if exc.args else None) from None
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            raise _commit_error(failed[0].error)

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        producer = self._producer
        if offsets:
            metadata = self._consumer.consumer_group_metadata()
            retry_call(
                lambda: producer.send_offsets(offsets, metadata, self._flush_timeout),
                policy=TRANSACTION_RETRY,
                operation="send_offsets_to_transaction",
                sleep=self._sleep,
            )
        retry_call(
            lambda: producer.commit(self._flush_timeout),
            policy=TRANSACTION_RETRY,
            operation="commit_transaction",
            sleep=self._sleep,
        )
        producer.begin()

    def forget(self, partitions: list[int]) -> None:
        """Drop partitions this worker no longer owns: nothing of theirs is committed later."""
        for p in partitions:
            self.pending.pop(p, None)
        self._strip_sealed(partitions)

    def _strip_sealed(self, partitions: list[int]) -> None:
        for sealed in self._sealed:
            for p in partitions:
                sealed.offsets.pop(p, None)


def _commit_error(err: object) -> StreamError:
    if not isinstance(err, KafkaError):
        return FatalError(f"offset commit failed: {err}")
    code = err.code()
    if code in _COMMIT_LATER or err.retriable():
        return TransientError(f"offset commit deferred: {err.str()}")
    if code == KafkaError.FENCED_INSTANCE_ID:
        return FatalError(
            "offset commit refused: another worker with the same group.instance.id "
            f"replaced this one ({err.str()})"
        )
    return FatalError(f"offset commit failed: {err.str()}")
