"""Consumes a topic into a :class:`~connectors.base.Sink` with checkpointed offsets.

The runner is its own consumer group member (confluent-kafka, manual
commits) and owns the one rule that makes sinks safe::

    sink.flush()  ->  DLQ producer flush  ->  commit offsets

in that order, at every checkpoint: every ``checkpoint_interval`` seconds or
``checkpoint_every`` records (a checkpoint never holds more: the runner takes no
more from the consumer than is left until then), when the sink asks (a file reached its roll
size), before partitions are revoked, and on SIGTERM. If any step fails,
nothing is committed; the records are kept by the sink or re-read from the
last committed offset, so the worst case is a replay, which the sinks absorb
(PostgreSQL by ``event_id``, files by name).

Backpressure: a sink that raises :class:`~stream.errors.BackpressureError`
(from ``add`` or ``flush``) makes the runner pause its partitions, wait
``retry_after`` while still serving the consumer group, and try again with
the same data. Nothing is dropped and memory stays bounded by one checkpoint.

Rebalancing uses the eager ``range`` assignor: on revocation the runner
checkpoints everything (or, if that fails, discards the sink's unflushed
records and lets the next owner replay them from the committed offsets).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors.base import Sink
from connectors.progress import ProgressLine
from stream.errors import BackpressureError, CheckpointError, FatalError
from stream.kafka.client import client_config
from stream.kafka.dlq import DlqWriter
from stream.kafka.producer import OutputProducer
from stream.kafka.reader import is_retriable_lookup_error, offset_of, partition_of
from stream.observability import metrics

log = logging.getLogger(__name__)

SINK_STAGE: Final = "sink"

CONSUMER_SETTINGS: Final[dict[str, Any]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "partition.assignment.strategy": "range",
    "enable.partition.eof": False,
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 10_485_760,
    "queued.min.messages": 200_000,
    "session.timeout.ms": 15_000,
    "heartbeat.interval.ms": 3_000,
}


#: Longest single ``consume`` while paused, so ``stop`` is noticed promptly.
PAUSED_CONSUME_SLICE: Final = 0.5


def consume_timeout(deadline: float, now: float) -> float | None:
    """How long the next ``consume`` may block before ``deadline``; ``None`` once it is reached.

    Never negative: librdkafka reads a negative timeout as "wait forever", and
    with the partitions paused nothing would ever arrive to end that wait. The
    remaining time is read once, because a second clock read (after a thread
    switch on a busy machine) can already lie past the deadline.
    """
    remaining = deadline - now
    if remaining <= 0:
        return None
    return min(PAUSED_CONSUME_SLICE, remaining)


@dataclass(frozen=True)
class SinkRunnerOptions:
    topic: str
    group_id: str
    #: Dead-letter topic for records the sink refuses (``None``: log and skip them).
    dlq_topic: str | None = "events.dlq"
    #: Seconds between timed checkpoints; ``None``: only when the sink asks (file rolling).
    checkpoint_interval: float | None = 1.0
    checkpoint_every: int = 200_000
    max_batch: int = 10_000
    #: Exit once every assigned partition is read up to its end.
    stop_at_end: bool = False
    flush_timeout: float = 30.0
    #: Longest single wait while the sink applies backpressure.
    max_backpressure_wait: float = 30.0


@dataclass
class SinkStats:
    consumed: int = 0
    rejected: int = 0
    checkpoints: int = 0
    backpressure_waits: int = 0
    #: Wall time of the run, and the part from the first record to the last checkpoint
    #: (without joining the group and waiting at the end): what the rate is measured over.
    seconds: float = 0.0
    active_seconds: float = 0.0
    committed: dict[int, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.consumed / self.active_seconds if self.active_seconds > 0 else 0.0


class SinkRunner:
    """Runs one sink until ``stop`` is set (SIGTERM) or, with ``stop_at_end``, caught up."""

    def __init__(
        self,
        conf: dict[str, str],
        sink: Sink,
        options: SinkRunnerOptions,
        *,
        stop: threading.Event | None = None,
        progress: ProgressLine | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conf = conf
        self._sink = sink
        self._options = options
        self._stop = stop or threading.Event()
        self._progress = progress
        self._clock = clock
        overrides = dict(CONSUMER_SETTINGS)
        # librdkafka settings given in the configuration (``kafka:``) win over the defaults.
        overrides.update({k: v for k, v in conf.items() if k in CONSUMER_SETTINGS})
        overrides["group.id"] = options.group_id
        self._consumer = Consumer(client_config(conf, **overrides))
        self._producer: OutputProducer | None = None
        self._dlq: DlqWriter | None = None
        if options.dlq_topic is not None:
            self._producer = OutputProducer(conf)
            self._dlq = DlqWriter(self._producer, options.dlq_topic)
        self.stats = SinkStats()
        #: Next offset to commit per partition: added to the sink, not yet committed.
        self._pending: dict[int, int] = {}
        self._since_checkpoint = 0
        self._last_checkpoint = clock()
        self._assignment: list[TopicPartition] = []
        #: Bumped on every revocation: a batch held across one is stale.
        self._generation = 0
        self._last_end_check = 0.0
        self._started = clock()
        self._first_record_at: float | None = None
        self._abandoned = False
        self._consumed_counter = metrics.events_consumed_total.labels(options.topic)

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> SinkStats:
        """Consume, write and checkpoint until stopped; the final checkpoint happens here."""
        self._started = started = self._clock()
        self._sink.open()
        self._consumer.subscribe(
            [self._options.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self._stop.is_set():
                batch = self._poll()
                if batch:
                    self._add(batch)
                if self._checkpoint_due():
                    self._checkpoint_until_done()
                self._show_progress()
                if self._options.stop_at_end and not batch and self._caught_up():
                    break
            self._checkpoint_until_done()
        except BaseException:
            self._abandoned = True  # leaving the group must not retry a failed checkpoint
            raise
        finally:
            self.stats.seconds = self._clock() - started
            self._close()
        return self.stats

    def _poll(self) -> list[Message]:
        # Never take more than the checkpoint has room for: ``checkpoint_every`` bounds
        # what one checkpoint (one database transaction of the PostgreSQL sink) holds.
        room = self._options.checkpoint_every - self._since_checkpoint
        messages = self._consumer.consume(min(self._options.max_batch, max(room, 1)), 0.5)
        batch = []
        for message in messages:
            err = message.error()
            if err is None:
                batch.append(message)
            elif err.fatal():
                raise FatalError(f"consumer failed: {err.str()}")
            elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise FatalError(f"topic {self._options.topic} does not exist")
            else:
                metrics.errors_total.labels(stage="consume", error_class=err.name()).inc()
        return batch

    def _add(self, batch: list[Message]) -> None:
        generation = self._generation
        while True:
            try:
                rejects = self._sink.add(batch)
                break
            except BackpressureError as exc:
                self._wait_out(exc)
                if generation != self._generation or self._stop.is_set():
                    return  # partitions moved on (or we are stopping): the batch is re-read
        if rejects:
            self._reject(batch, rejects)
        if self._first_record_at is None:
            self._first_record_at = self._clock()
        pending = self._pending
        for message in batch:
            pending[partition_of(message)] = offset_of(message) + 1
        self._since_checkpoint += len(batch)
        self.stats.consumed += len(batch)
        self._consumed_counter.inc(len(batch))

    def _reject(self, batch: list[Message], rejects: list[Any]) -> None:
        self.stats.rejected += len(rejects)
        for reject in rejects:
            metrics.events_rejected_total.labels(
                stage=SINK_STAGE, error_class=reject.error_class
            ).inc()
            if self._dlq is not None:
                self._dlq.write(
                    batch[reject.position],
                    stage=SINK_STAGE,
                    error_class=reject.error_class,
                    message=reject.message,
                )
            else:
                log.warning("skipping a record the sink refused: %s", reject.message)
        if self._dlq is not None:
            metrics.dlq_records_total.labels(stage=SINK_STAGE).inc(len(rejects))

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        if self._sink.wants_checkpoint():
            return True
        if not self._pending:
            return False
        if self._since_checkpoint >= self._options.checkpoint_every:
            return True
        interval = self._options.checkpoint_interval
        return interval is not None and self._clock() - self._last_checkpoint >= interval

    def checkpoint(self) -> None:
        """flush the sink -> flush the DLQ producer -> commit offsets. Raises on any failure."""
        started = time.perf_counter()
        try:
            self._sink.flush()
            if self._producer is not None:
                self._producer.flush(self._options.flush_timeout)
            offsets = [
                TopicPartition(self._options.topic, partition, offset)
                for partition, offset in self._pending.items()
            ]
            if offsets:
                self._commit(offsets)
        except Exception:
            metrics.checkpoints_total.labels(outcome="failed").inc()
            raise
        self.stats.committed.update(self._pending)
        self._pending.clear()
        self._since_checkpoint = 0
        self._last_checkpoint = self._clock()
        self.stats.checkpoints += 1
        if self._first_record_at is not None and offsets:
            self.stats.active_seconds = self._clock() - self._first_record_at
        metrics.checkpoints_total.labels(outcome="ok").inc()
        metrics.checkpoint_duration_seconds.observe(time.perf_counter() - started)

    def _checkpoint_until_done(self) -> None:
        """Checkpoint; while the sink applies backpressure, wait and try again.

        When stopping there is no waiting: the sink's own retry has already had
        its time budget, so the records stay uncommitted and are re-read later.
        """
        while True:
            try:
                self.checkpoint()
                return
            except BackpressureError as exc:
                if self._stop.is_set():
                    raise CheckpointError(
                        f"could not write the last records before stopping ({exc}); their "
                        "offsets were not committed, so they will be read again"
                    ) from None
                self._wait_out(exc)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise CheckpointError(f"offset commit failed: {exc.args[0]}") from None
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            raise CheckpointError(f"offset commit failed for {failed[0]}: {failed[0].error}")

    def _wait_out(self, exc: BackpressureError) -> None:
        """Pause the partitions for ``retry_after`` seconds, still serving the group."""
        wait = min(max(exc.retry_after, 0.1), self._options.max_backpressure_wait)
        self.stats.backpressure_waits += 1
        log.warning("sink backpressure: %s; pausing consumption for %.1fs", exc, wait)
        assignment = list(self._assignment)
        if assignment:
            self._consumer.pause(assignment)
        metrics.paused_partitions.set(len(assignment))
        deadline = self._clock() + wait
        try:
            while not self._stop.is_set():
                timeout = consume_timeout(deadline, self._clock())
                if timeout is None:
                    break
                for message in self._consumer.consume(1, timeout):
                    # Paused partitions deliver nothing; anything else is an error event.
                    err = message.error()
                    if err is not None and err.fatal():
                        raise FatalError(f"consumer failed: {err.str()}")
        finally:
            still_assigned = [tp for tp in assignment if tp in self._assignment]
            if still_assigned:
                self._consumer.resume(still_assigned)
            metrics.paused_partitions.set(0)

    # -- rebalancing -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment = list(partitions)
        metrics.assigned_partitions.set(len(partitions))
        metrics.rebalances_total.labels(kind="assign").inc()
        self._sink.on_assign([(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.rebalances_total.labels(kind="revoke").inc()
        if self._abandoned:
            self._sink.discard()
            self._forget()
            return
        try:
            self.checkpoint()
        except Exception as exc:
            log.warning("checkpoint on revocation failed (%s); records will be re-read", exc)
            self._sink.discard()
        self._forget()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.rebalances_total.labels(kind="lost").inc()
        self._sink.discard()
        self._forget()

    def _forget(self) -> None:
        self._pending.clear()
        self._since_checkpoint = 0
        self._assignment = []
        self._generation += 1

    # -- end of input, progress, shutdown ----------------------------------------------------

    def _caught_up(self) -> bool:
        """True when every assigned partition has been read to its high watermark."""
        now = self._clock()
        if now - self._last_end_check < 1.0 or not self._assignment:
            return False
        self._last_end_check = now
        positions = self._consumer.position(self._assignment)
        committed: list[TopicPartition] | None = None
        for tp in positions:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=5.0, cached=False
                )
            except KafkaException as exc:
                if is_retriable_lookup_error(exc):
                    return False  # e.g. a leader moving: ask again at the next check
                raise
            offset = tp.offset
            if offset < 0:
                if committed is None:
                    committed = self._consumer.committed(self._assignment, timeout=5.0)
                offset = next(
                    (c.offset for c in committed if c.partition == tp.partition and c.offset >= 0),
                    low,
                )
            if offset < high:
                return False
        return True

    def _show_progress(self) -> None:
        progress = self._progress
        if progress is None or not progress.due():
            return
        s = self.stats
        elapsed = self._clock() - self._started
        rate = s.consumed / elapsed if elapsed > 0 else 0.0
        since = self._clock() - self._last_checkpoint
        progress.show(
            f"sink {self._sink.name}: {s.consumed:,} records ({s.rejected:,} rejected)  "
            f"{rate:,.0f} records/s  {s.checkpoints:,} checkpoints, last {since:,.1f}s ago"
        )

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.finish()
        try:
            self._consumer.close()
        finally:
            self._sink.close()
