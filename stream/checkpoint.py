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

**Bounded replay** (at_least_once). After a crash the group replays, per partition,
the records between its last commit and what the worker had consumed. A commit
follows its seal by one acknowledgement round trip, so in steady state that span
holds at most two commit intervals of records plus the batches in flight. Two
things used to stretch it (a broker outage replayed up to 15k of 20k records):

* a deferred checkpoint backed off up to 10 s, so after an outage the first commit
  came seconds after the broker was back. The backoff is now capped at the commit
  interval: a deferred checkpoint is retried at least once per interval.
* a worker whose session expired during the outage (librdkafka drops the assignment
  when no heartbeat succeeded for ``session.timeout.ms``: a broker stopped 8 s plus
  its restart is longer than 15 s) *forgot* every sealed checkpoint of the lost
  partitions, although their outputs were still queued and were acknowledged as soon
  as the broker came back; when it got the same partitions back it re-read everything
  since the last commit made before the outage. Lost partitions are now remembered
  (:class:`_Orphan`): on re-assignment, if the group's committed offset is still the
  one this worker committed last (nobody else committed meanwhile) and the outputs
  of its sealed checkpoints are acknowledged, those offsets are committed before
  fetching starts (:meth:`Checkpointer.resume`). The window state is consistent
  with that: a sealed checkpoint wrote its state and offset marker in the same
  acknowledged epoch.

``stream_replayed_records`` (histogram, one observation per assigned partition)
shows replays to an operator: at assignment, the offset the worker resumes from is
compared with what is known to have been processed before — the previous owner's
last state marker in the changelog, or this worker's own progress when it gets a
partition back. It is a lower bound: records a killed owner processed after its
last seal (under one commit interval) are not known to anyone.

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
from stream.resilience.retry import RetryExhausted, RetryPolicy, next_delay, retry_call

log = logging.getLogger(__name__)

#: Changelog key of the per-partition "state reflects input up to offset" marker.
STATE_OFFSET_KEY: Final = b"\x00stream.input-offset"

Guarantee = Literal["at_least_once", "exactly_once"]

#: Backoff between deferred checkpoints (at_least_once); the give-up bound is separate.
#: Each delay is also capped at the commit interval (see "Bounded replay" above).
DEFERRAL_BACKOFF: Final = RetryPolicy(
    initial=0.5, multiplier=2.0, max_delay=10.0, max_attempts=1_000_000, total_timeout=None
)
#: In-place retries of a transaction commit (exactly_once).
#: Short in total: the checkpoint holds the runner lock, and only consume() — which waits
#: for it — lets the consumer rejoin its group; a deferred checkpoint is retried later.
TRANSACTION_RETRY: Final = RetryPolicy(
    initial=0.2, multiplier=2.0, max_delay=2.0, max_attempts=1_000, total_timeout=10.0
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


class _Orphan:
    """A partition this worker lost (or gave up) with processed, uncommitted progress."""

    __slots__ = ("committed", "processed", "sealed")

    def __init__(
        self, committed: int | None, processed: int | None, sealed: list[tuple[AckEpoch, int]]
    ) -> None:
        #: The group's committed offset as this worker last knew it.
        self.committed = committed
        #: Next offset after the last record processed (outputs queued, maybe unacknowledged).
        self.processed = processed
        #: Uncommitted sealed checkpoints of the partition, oldest first: (epoch, offset).
        self.sealed = sealed


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
        #: Partitions forgotten with uncommitted progress, in case they come back.
        self._orphans: dict[int, _Orphan] = {}

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
        # Never wait longer than an interval: the commit must follow the broker's return.
        delay = min(delay, self._interval)
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
        """Offsets into the transaction, then commit; retries running out defer the
        checkpoint (TransientError) so the runner lock is released and consume() can
        serve the group — the open transaction is committed by a later checkpoint."""
        try:
            self._commit_transaction_once(offsets)
        except RetryExhausted as exc:
            raise TransientError(str(exc)) from None

    def _commit_transaction_once(self, offsets: list[TopicPartition]) -> None:
        producer = self._producer
        if offsets:
            # Fresh group metadata on every try: after the group rejoined (a broker outage
            # longer than the session), the old generation is fenced for good.
            consumer = self._consumer
            retry_call(
                lambda: producer.send_offsets(
                    offsets, consumer.consumer_group_metadata(), self._flush_timeout
                ),
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
        """Drop partitions this worker no longer owns: nothing of theirs is committed later
        — unless the same partition is assigned to this worker again with nothing committed
        by anyone meanwhile (:meth:`resume`)."""
        for p in partitions:
            sealed = [(s.epoch, s.offsets[p]) for s in self._sealed if p in s.offsets]
            processed = self.pending.pop(p, None)
            if sealed or processed is not None:
                self._orphans[p] = _Orphan(self.committed.get(p), processed, sealed)
        self._strip_sealed(partitions)

    def resume(
        self, partitions: list[int], state_offsets: Mapping[int, int], wait: float | None = None
    ) -> dict[int, int]:
        """On assignment (inside the rebalance callback, before fetching starts): reclaim
        this worker's own acknowledged progress on partitions it gets back, and observe
        ``stream_replayed_records``. Returns the offset each partition resumes from
        (absent: unknown, or nothing committed).

        ``state_offsets``: the input offset each restored window state already reflects.
        """
        orphans = {p: o for p in partitions if (o := self._orphans.pop(p, None)) is not None}
        if not partitions:
            return {}
        try:
            got = self._consumer.committed(
                [TopicPartition(self._input, p) for p in partitions], timeout=10
            )
        except KafkaException as exc:
            log.warning("cannot read committed offsets on assignment: %s", exc.args[0])
            return {}
        committed = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        before = dict(committed)
        if not self._eos and self.failed is None:
            wait = self._flush_timeout if wait is None else wait
            reclaim = self._reclaimable(orphans, committed, state_offsets, wait)
            if reclaim:
                self._reclaim(reclaim, committed)
        self.committed.update(committed)
        for p in partitions:
            orphan = orphans.get(p)
            own = -1  # this worker's own progress counts if nobody committed since
            if orphan and orphan.processed is not None and orphan.committed == before.get(p):
                own = orphan.processed
            known = max(state_offsets.get(p, -1), own)
            start = committed.get(p, 0)
            replayed = max(known - start, 0)
            metrics.replayed_records.observe(replayed)
            if replayed:
                log.info(
                    "partition %d resumes at offset %d: %d records already processed before "
                    "(%s) are replayed",
                    p,
                    start,
                    replayed,
                    "by this worker" if own >= 0 else "by its previous owner",
                )
        return committed

    def _reclaimable(
        self,
        orphans: Mapping[int, _Orphan],
        committed: Mapping[int, int],
        state_offsets: Mapping[int, int],
        wait: float,
    ) -> dict[int, int]:
        """Per partition got back untouched, the offset of its newest sealed checkpoint
        whose outputs (and every earlier checkpoint's) are acknowledged — never past the
        offset the restored window state reflects (another owner may have written the
        changelog last), so the windows miss nothing."""
        candidates = {
            p: o for p, o in orphans.items() if o.sealed and committed.get(p) == o.committed
        }
        if not candidates:
            return {}
        deadline = self._clock() + wait
        epochs = [e for o in candidates.values() for e, _ in o.sealed]
        while not all(e.done for e in epochs) and self._clock() < deadline:
            self._producer.poll()  # serves delivery reports
            self._sleep(0.05)
        reclaim: dict[int, int] = {}
        for p, orphan in candidates.items():
            acked = list(takewhile(lambda sealed: sealed[0].done, orphan.sealed))
            if not acked:
                continue
            offset = min(acked[-1][1], state_offsets.get(p, -1))
            if offset > committed.get(p, -1):
                reclaim[p] = offset
        return reclaim

    def _reclaim(self, reclaim: dict[int, int], committed: dict[int, int]) -> None:
        try:
            self._producer.check_failures()  # never commit past a record that failed
        except StreamError as exc:
            self.failed = exc  # the runner stops at its next step
            metrics.checkpoints_total.labels(outcome="failed").inc()
            log.error("not resuming lost partitions: %s", exc)
            return
        try:
            self._commit([TopicPartition(self._input, p, off) for p, off in reclaim.items()])
        except StreamError as exc:  # only a shortcut: the next commits decide the rest
            log.warning("could not commit the progress made before losing %s: %s", reclaim, exc)
            return
        for p, off in reclaim.items():
            log.info(
                "partition %d back: committed offset %d -> %d (this worker's acknowledged "
                "progress before it lost the partition)",
                p,
                committed.get(p, -1),
                off,
            )
            committed[p] = off
            self.committed[p] = off

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
