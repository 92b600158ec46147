"""The batch runner: Kafka records in, the stage chain, outputs and checkpoints.

The runner joins the stages to Kafka; the Faust app (:mod:`stream.app`) moves its
batches between agents, one agent per link of the chain::

    fetch ─▶ validate ─▶ [user stages] ─▶ enrich ─▶ [user stages] ─▶ correlate ─▶ finish
             (each link: ``run_step``)                      (outputs, then committable offsets)

Per batch: :meth:`BatchRunner.begin` turns one ``consume`` result into a
:class:`~stream.runtime.work.WorkBatch`; each agent calls :meth:`run_step` with its
link (:mod:`stream.runtime.steps`, :mod:`stream.runtime.user_steps`), which first
drops the records of partitions no longer owned (:mod:`stream.runtime.ownership`);
the last agent calls :meth:`finish`, which routes every output of the batch
(:mod:`stream.runtime.outputs`) and only then records its offsets as committable.
A batch's offsets are committed by the next checkpoint after its outputs are
acknowledged (at_least_once) or in the transaction holding its outputs
(exactly_once) — nothing is produced for a batch still in the chain, so both
guarantees are exactly as with one agent.

Going back: an aborted ``exactly_once`` transaction rewinds every owned partition
to its last commit (state from the changelog); a dependency found down seeks back
to the batch's first records and pauses (:mod:`stream.runtime.flow`). Both bump
the ownership epoch, so every batch fetched before is dropped between agents.

Failures: a link that raised past its own isolation, or a checkpoint that failed
for good, poisons the runner: it never commits again and every later call raises,
so the worker stops and the group replays from the last commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream.checkpoint import Checkpointer
from stream.config import Settings
from stream.errors import FatalError, StreamError
from stream.kafka.pausing import PartitionPauser
from stream.kafka.producer import (
    OutputProducer,
    TransactionAbortedError,
)
from stream.kafka.reader import offset_of, record_partitions
from stream.observability import metrics
from stream.observability.tracing import BatchTracer
from stream.pipeline import Stages
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.runtime.flow import FlowControl
from stream.runtime.gauges import update_gauges
from stream.runtime.outputs import OutputRouter
from stream.runtime.ownership import ChangelogReader, Ownership
from stream.runtime.rebalance import Commits
from stream.runtime.steps import (
    CORRELATE,
    DECODE,
    ENRICH,
    VALIDATE,
    CorrelateStep,
    DependencyUnavailable,
    EnrichStep,
    Step,
    ValidateStep,
)
from stream.runtime.user_steps import UserStep
from stream.runtime.work import WorkBatch
from stream.stages.validate import ERROR_CLASSES

log = logging.getLogger(__name__)

#: Consume errors that retrying cannot fix: stop with one clear line instead of warning forever.
_NOT_ALLOWED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)

Link = Step | UserStep


class Batch(NamedTuple):
    """Records fetched in one ``consume`` call, tagged with the ownership epoch."""

    records: list[Message]
    epoch: int


class BatchRunner:
    """Owns the consumer side of a worker: fetch, the chain's links, outputs, checkpoints."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        producer: OutputProducer,
        stages: Stages,
        read_changelog: ChangelogReader,
        tracer: BatchTracer | None = None,
        lookup_breakers: list[CircuitBreaker] | None = None,
        user_steps: list[UserStep] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._tracer = tracer
        self._consumer = consumer
        self._producer = producer
        self._stages = stages
        self._wall = wall_clock
        self._input = settings.topics.input
        self._eos = settings.processing_guarantee == "exactly_once"
        self.checkpointer = Checkpointer(
            consumer=consumer,
            producer=producer,
            state=stages.correlator,
            changelog_topic=settings.changelog_topic,
            input_topic=self._input,
            guarantee=settings.processing_guarantee,
            interval=settings.commit_interval,
            every=settings.commit_every,
            pipelined=producer.tracks_acks,
        )
        self.router = OutputRouter(
            settings, producer, output_key=stages.output_key, encoder=stages.encoder
        )
        pauser = PartitionPauser(consumer, self._input)
        self.ownership = Ownership(
            consumer, self._input, stages.correlator, self.checkpointer, pauser, read_changelog
        )
        users = list(user_steps or [])
        self.flow = FlowControl(
            pauser,
            self.ownership,
            producer.queue_limit,
            [*(lookup_breakers or []), *(u.breaker for u in users if u.is_async)],
            wall_clock,
        )
        self._enrich = EnrichStep(stages.enricher)
        self.steps: list[Link] = [
            ValidateStep(stages.validator, stages.decoder, self._input),
            *(u for u in users if u.spec.after == VALIDATE),
            self._enrich,
            *(u for u in users if u.spec.after == ENRICH),
            CorrelateStep(
                stages.correlator,
                self.router.correlations,
                self.ownership.state_offsets,
                with_offsets=bool(settings.correlate.rules),
            ),
        ]
        self.last_poll = 0.0
        #: Per partition, (offset after the last record, epoch) of the last batch fetched /
        #: through ``finish``: they differ while records of it are in the chain (busy).
        self._fetched: dict[int, tuple[int, int]] = {}
        self._finished: dict[int, tuple[int, int]] = {}
        #: Set when a batch failed mid-way: from then on nothing is committed.
        self._failed: BaseException | None = None
        self.commits = Commits(
            self,
            self.checkpointer,
            self.ownership,
            producer,
            input_topic=self._input,
            exactly_once=self._eos,
            static_membership=bool(settings.group_instance_id),
        )
        self._labels_consumed = metrics.events_consumed_total.labels(topic=self._input)
        names = [s.name for s in self.steps]
        self._processed = {n: metrics.events_processed_total.labels(stage=n) for n in names}
        self._stage_time = {n: metrics.stage_duration_seconds.labels(stage=n) for n in names}
        self._export_known_series([rule.name for rule in settings.correlate.rules])
        self._warn_queue(producer.queue_limit)

    def describe(self) -> list[str]:
        """The agent chain, in order (logged at start-up, shown on ``/ready``)."""
        return ["fetch", *(s.name for s in self.steps), "outputs"]

    def _warn_queue(self, limit: int) -> None:
        in_flight = self.settings.max_inflight_batches * self.settings.max_batch
        if limit - self.flow.high_water < in_flight:
            log.warning(
                "queue.buffering.max.messages=%d leaves less than the records in flight (%d) "
                "above the backpressure mark: producing may block",
                limit,
                in_flight,
            )

    @staticmethod
    def _export_known_series(rules: list[str]) -> None:
        """Export, at zero, every series whose label values are known before any event
        (a labelled child appears on /metrics only once used: "no data" instead of 0)."""
        for rule in rules:
            metrics.correlations_total.labels(rule=rule)
        for error_class in ERROR_CLASSES:
            metrics.events_rejected_total.labels(stage=VALIDATE, error_class=error_class)
        metrics.events_rejected_total.labels(stage=CORRELATE, error_class="late")
        for stage in (VALIDATE, CORRELATE):
            metrics.dlq_records_total.labels(stage=stage)
        metrics.events_dropped_total.labels(stage=ENRICH)
        for kind in ("assign", "revoke", "lost"):
            metrics.rebalances_total.labels(kind=kind)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._eos:
            self._producer.init_transactions()
            self._producer.begin()
        commits = self.commits
        self._consumer.subscribe(
            [self._input],
            on_assign=commits.on_assign,
            on_revoke=commits.on_revoke,
            on_lost=commits.on_lost,
        )

    def close(self, wait: float = 10.0) -> bool:
        """Final checkpoint (unless something failed), then leave the group (SIGTERM).
        Returns whether everything processed was committed."""
        committed = False
        if self.failed is None:
            try:
                committed = self.checkpointer.checkpoint(wait=wait)
                if not committed:
                    log.warning("final checkpoint deferred; uncommitted records will be replayed")
            except StreamError:
                log.exception("final checkpoint failed; uncommitted records will be replayed")
        self._consumer.close()
        return committed

    @property
    def failed(self) -> BaseException | None:
        """The failure that stopped this runner (a batch, or a checkpoint), if any."""
        return self._failed or self.commits.failed or self.checkpointer.failed

    @property
    def paused(self) -> bool:
        return self.flow.paused

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self.ownership.assigned)

    # -- the chain ------------------------------------------------------------------------------

    def fetch(self, timeout: float = 0.0) -> Batch | None:
        """Take up to ``max_batch`` records librdkafka already fetched (non-blocking by default).

        Called even while paused: ``consume`` also serves rebalances and keeps the
        member in its group.
        """
        self.flow.before_fetch(len(self._producer))
        # librdkafka reads a negative timeout as "block forever": never pass one.
        records = self._consumer.consume(self.settings.max_batch, max(timeout, 0.0))
        self.last_poll = self._wall()
        if not records:
            return None
        return Batch(records, self.ownership.epoch)

    def begin(self, batch: Batch) -> WorkBatch | None:
        """The first link: consume errors handled, the batch's state created."""
        self._check_alive()
        records = batch.records
        good = [m for m in records if m.error() is None]
        if len(good) != len(records):
            self._handle_errors(m for m in records if m.error() is not None)
        if not good:
            return None
        self._labels_consumed.inc(len(good))
        metrics.batch_size.observe(len(good))
        work = WorkBatch(batch.epoch, good, record_partitions(good), int(self._wall() * 1000))
        self._fetched.update((p, (n, work.epoch)) for p, n in _next_offsets(work).items())
        self.ownership.check(work)
        return work

    def enter(self, work: WorkBatch) -> bool:
        """Before a link: drop records of partitions gone since the batch was fetched."""
        self._check_alive()
        self.ownership.check(work)
        return not work.dead or len(work.dead) < len(set(work.partitions))

    def run_step(self, step: Step | UserStep, work: WorkBatch) -> bool:
        """Run one link on the batch; False when the batch was dropped (a dependency is down)."""
        if not self.enter(work):
            return False
        start = time.perf_counter()
        try:
            step.run(work)
        except DependencyUnavailable as exc:
            self.dependency_down(work, exc)
            return False
        except TransactionAbortedError as exc:
            # A link that produces as it goes (correlate emits its results) met the broken
            # transaction before finish() did: the same recovery (exactly_once), or fail.
            self._batch_failed(exc)
            return False
        except BaseException as exc:
            self._failed = exc
            raise
        self.step_done(step.name, work, time.perf_counter() - start)
        return True

    def step_done(self, name: str, work: WorkBatch, seconds: float) -> None:
        self._stage_time[name].observe(seconds)
        self._processed[name].inc(len(work.events))
        work.stage_seconds[name] = seconds

    def dependency_down(self, work: WorkBatch, exc: DependencyUnavailable) -> None:
        """Fetch the batch again from its first records once the dependency is back."""
        firsts: dict[int, int] = {}
        for m, p in zip(work.records, work.partitions, strict=True):
            if p not in work.dead:
                firsts.setdefault(p, offset_of(m))
        self.flow.dependency_down(firsts, exc.stage, exc.why)

    def finish(self, work: WorkBatch) -> None:
        """The last link: route the batch's outputs, then record its offsets as committable."""
        if not self.enter(work):
            return
        start_ns = time.time_ns()
        try:
            self.router.route(work)
        except KafkaException as exc:
            self._batch_failed(self._producer.explain(exc))
            return
        except TransactionAbortedError as exc:
            self._batch_failed(exc)
            return
        except BaseException as exc:
            self._failed = exc
            raise
        self.flow.dependency_ok()
        nexts = _next_offsets(work)
        self.checkpointer.record_progress(nexts, len(work.records))
        self.ownership.progressed(nexts)
        self._finished.update((p, (n, work.epoch)) for p, n in nexts.items())
        self._producer.poll()
        now_s = self._wall()
        self._stages.correlator.hold_idle(nexts, int(now_s * 1000))
        last_ts = work.records[-1].timestamp()[1]
        if last_ts > 0:
            metrics.end_to_end_latency_seconds.observe(max(now_s - last_ts / 1000.0, 0.0))
        if work.times:
            metrics.event_time_lag_seconds.observe(max(now_s - work.times[-1] / 1000.0, 0.0))
        if self._tracer is not None:
            self._tracer.record_batch(
                start_ns=start_ns - int(sum(work.stage_seconds.values()) * 1e9),
                end_ns=time.time_ns(),
                records=len(work.records),
                traceparents=self.router.traceparents,
                stage_seconds=work.stage_seconds,
            )

    def _check_alive(self) -> None:
        if self.failed is not None:
            raise FatalError(f"not processing after an earlier failure: {self.failed}")

    def _batch_failed(self, error: StreamError) -> None:
        """A producer error while routing or in a link that produces: recover the transaction
        (exactly_once), or fail."""
        if self._eos and isinstance(error, TransactionAbortedError):
            self.commits.recover(error, list(self.ownership.assigned))
            return
        self._failed = error
        raise error

    def _handle_errors(self, errored: Iterable[Message]) -> None:
        for m in errored:
            err = m.error()
            assert err is not None
            metrics.errors_total.labels(stage="consume", error_class=err.name()).inc()
            fatal = self._fatal_consume_error(err)
            if fatal is not None:
                self._failed = fatal  # nothing is committed any more
                raise fatal
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error on %s[%s]: %s", m.topic(), m.partition(), err.str())

    def _fatal_consume_error(self, err: KafkaError) -> FatalError | None:
        """A consume error that retrying cannot fix, as one clear line (else None).

        librdkafka hands a fatal consumer error (e.g. this static member fenced by
        another one with the same ``group.instance.id``) to ``consume()`` as an event
        whose code is ``_FATAL`` and whose ``fatal()`` is False: it must stop the worker,
        not be warned about forever.
        """
        text = err.str()
        if err.code() == KafkaError._AUTO_OFFSET_RESET:
            return FatalError(
                "no input offset to resume from and auto.offset.reset=error (none committed, "
                f"or the committed one is no longer on the broker): {text}"
            )
        if not (err.fatal() or err.code() == KafkaError._FATAL):
            if err.code() in _NOT_ALLOWED:
                return FatalError(f"consumer not allowed: {text} (check the ACLs)")
            return None
        instance = self.settings.group_instance_id
        if instance and "instance" in text.lower():
            return FatalError(
                f"fenced: another worker joined the group with the same group.instance.id "
                f"{instance!r} (STREAM_GROUP_INSTANCE_ID must be unique per worker): {text}"
            )
        return FatalError(f"consumer failed: {text}")

    # -- periodic work --------------------------------------------------------------------------

    def tick(self, checkpoint: bool = True) -> None:
        """Close idle windows, checkpoint when due (unless the caller does that itself),
        refresh gauges (about every second). Raises once the runner has failed."""
        if self.failed is not None:
            raise FatalError(f"stopping after an earlier failure: {self.failed}")
        now_ms = int(self._wall() * 1000)
        busy = self.busy_partitions()
        correlator = self._stages.correlator
        for partition, closed in correlator.advance_idle_by_partition(now_ms, busy).items():
            self.router.correlations(closed, partition)
        if checkpoint:
            self.maybe_checkpoint()
        update_gauges(
            self._consumer,
            self._input,
            self.ownership.assigned,
            self.checkpointer,
            self._stages.correlator,
            self._stages.optional_fields,
            self._enrich.sample,
        )
        self._enrich.sample = []

    def busy_partitions(self) -> set[int]:
        """Owned partitions that must not count as idle: records of them fetched and not
        through the chain yet (the idle clock restarts when the last one is), records the
        client has not handed to the chain yet, or all of them while the input is paused
        (what waits in Kafka is unknown).

        Batches fetched before a partition was (re)assigned or rewound are dropped in
        the chain and no longer count.
        """
        owned = self.ownership.assigned
        if self.flow.paused:
            return set(owned)
        fetched, finished = self._fetched, self._finished
        for stale in [p for p, (_, epoch) in fetched.items() if epoch < owned.get(p, epoch + 1)]:
            del fetched[stale]
            finished.pop(stale, None)
        busy = {p for p, last in fetched.items() if finished.get(p) != last}
        committed = self.checkpointer.committed
        return busy | client_ahead(self._consumer, self._input, owned, committed)

    def checkpoint_due(self) -> bool:
        return self.failed is None and self.checkpointer.due()

    def maybe_checkpoint(self) -> None:
        if self.checkpoint_due():
            self.commits.checkpoint()


def client_ahead(
    consumer: Consumer, topic: str, owned: Iterable[int], committed: Mapping[int, int]
) -> set[int]:
    """Partitions with records the client holds (or the broker has) beyond what the
    chain was given: their cached high watermark is above the consumer's position.

    Under a backlog, ``consume`` hands out one partition's records after another's, and
    a partition can wait seconds in librdkafka's queue — after an assignment too, when
    a restored partition has no position yet: it then counts from its ``committed``
    offset. librdkafka moves the position past transaction markers (also when a fetch
    returned only a marker), so a caught-up transactional input is not busy.
    """
    tps = [TopicPartition(topic, p) for p in owned]
    if not tps:
        return set()
    try:
        positions = consumer.position(tps)
    except KafkaException:
        return set()
    behind: set[int] = set()
    for tp in positions:
        position = tp.offset if tp.offset >= 0 else committed.get(tp.partition, -1)
        if position < 0:
            continue
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high > position:
            behind.add(tp.partition)
    return behind


def _next_offsets(work: WorkBatch) -> dict[int, int]:
    """Per live partition of the batch, the offset after its last record."""
    parts, records, dead = work.partitions, work.records, work.dead
    wanted = len(set(parts) - dead)
    nexts: dict[int, int] = {}
    for i in range(len(records) - 1, -1, -1):
        p = parts[i]
        if p not in nexts and p not in dead:
            nexts[p] = offset_of(records[i]) + 1
            if len(nexts) == wanted:
                break
    return nexts


__all__ = ["DECODE", "Batch", "BatchRunner"]
