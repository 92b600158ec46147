"""The batch runner: Kafka records in, stage calls, outputs produced, progress recorded.

This is the only module that joins the stages to Kafka. Per batch it does:
decode/validate all values (one C call each) → DLQ the rejects → enrich all
valid events → queue enriched records → feed each partition's events to the
window engine → queue correlations and late events → record offsets. Metrics
are updated once per batch. Nothing here allocates a task, span or log line
per event.

Rebalances: ``on_assign`` restores window state from the changelog before the
partition's first batch is processed; ``on_revoke`` checkpoints and drops the
partition. Batches fetched before a rebalance are filtered by an assignment
epoch, so a record of a partition this worker no longer owns is never
processed (its new owner replays it from the committed offset).

Going back: some failures need records fetched again. The same epoch bump plus
a ``seek`` serves them — an aborted ``exactly_once`` transaction (rewind every
owned partition to its last commit and reload its window state from the
changelog) and an unavailable enrichment lookup in ``pause`` mode (seek back to
the start of the batch that found it down, pause, resume once its circuit
breaker lets a probe through). Backpressure pauses fetching while the producer
queue is above half its capacity and resumes below a tenth
(:mod:`stream.kafka.pausing`).

Failures: a batch that raised, or a checkpoint that failed for good, poisons
the runner: it never commits again and every later call raises, so the worker
stops without committing past the failure and the group replays from the last
commit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from stream.checkpoint import STATE_OFFSET_KEY, Checkpointer
from stream.config import Settings
from stream.errors import FatalError, StreamError, TransientError
from stream.fieldpaths import ABSENT
from stream.kafka.dlq import DlqWriter
from stream.kafka.headers import TRACEPARENT, TRACESTATE, header_value
from stream.kafka.pausing import BACKPRESSURE, LOOKUP, PartitionPauser
from stream.kafka.producer import (
    OutputProducer,
    ProducerFencedError,
    ProducerResetNeeded,
    TransactionAbortedError,
)
from stream.kafka.reader import offset_of, partition_of, record_offsets, record_partitions
from stream.models import Correlation, encoder
from stream.observability import metrics
from stream.observability.tracing import BatchTracer
from stream.pipeline import Stages
from stream.resilience.circuit_breaker import BreakerState, CircuitBreaker
from stream.resilience.retry import RetryPolicy
from stream.stages import Reject
from stream.stages.enrich import EnrichResult
from stream.stages.validate import (
    BAD_TIMESTAMP,
    ERROR_CLASSES,
    SCHEMA_VIOLATION,
    ValidateResult,
    failure_labels,
)

log = logging.getLogger(__name__)

DECODE, VALIDATE, ENRICH, CORRELATE = "decode", "validate", "enrich", "correlate"

ChangelogReader = Callable[[int], Iterable[tuple[bytes, bytes | None]]]

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
#: ``dlq.error.class`` of a record a stage raised on (a stage bug, not a contract violation).
UNPROCESSABLE = "unprocessable"
#: Its ``dlq.attempts``: once in its batch, once alone.
ISOLATED_ATTEMPTS = 2
#: More transaction recoveries than this within RECOVERY_WINDOW_S stop the worker.
MAX_RECOVERIES = 5
RECOVERY_WINDOW_S = 300.0
#: Seconds a checkpoint on revocation may keep retrying before the partitions go anyway.
REVOKE_CHECKPOINT_WAIT_S = 10.0
#: Backoff before retrying a lookup that failed while the breaker still let calls through.
LOOKUP_RETRY = RetryPolicy(
    initial=0.5, multiplier=2.0, max_delay=10.0, max_attempts=1_000_000, total_timeout=None
)


#: Lineage headers (README "Lineage"): the pipeline, its file's content hash, the input record.
LINEAGE_PIPELINE: Final = "stream.pipeline"
LINEAGE_DIGEST: Final = "stream.pipeline.digest"
LINEAGE_INPUT: Final = "stream.input"


def lineage_headers(settings: Settings) -> list[tuple[str, bytes]]:
    """The headers naming the pipeline that wrote a record (same for every record)."""
    return [
        (LINEAGE_PIPELINE, settings.pipeline.encode()),
        (LINEAGE_DIGEST, settings.pipeline_digest.encode()),
    ]


class Batch(NamedTuple):
    """Records fetched in one ``consume`` call, tagged with the assignment epoch."""

    records: list[Message]
    epoch: int


class BatchRunner:
    """Runs batches through validate → enrich → correlate and checkpoints progress."""

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
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._tracer = tracer
        self._traceparents: list[bytes] = []
        self._consumer = consumer
        self._producer = producer
        self._stages = stages
        self._validator = stages.validator
        self._enricher = stages.enricher
        self._correlator = correlator = stages.correlator
        self._output_key = stages.output_key
        self._decoder = stages.decoder
        self._encoder = stages.encoder
        #: Lineage headers every output record carries (README "Lineage").
        self._lineage = lineage_headers(settings)
        self._presence_sample: list[Any] = []
        self._has_rules = bool(settings.correlate.rules)
        self._read_changelog = read_changelog
        self._wall = wall_clock
        topics = settings.topics
        self._input = topics.input
        self._enriched = topics.enriched
        self._correlations = topics.correlations
        self._dlq = DlqWriter(producer, topics.dlq, extra_headers=self._lineage)
        self._eos = settings.processing_guarantee == "exactly_once"
        self.checkpointer = Checkpointer(
            consumer=consumer,
            producer=producer,
            state=correlator,
            changelog_topic=settings.changelog_topic,
            input_topic=self._input,
            guarantee=settings.processing_guarantee,
            interval=settings.commit_interval,
            every=settings.commit_every,
            pipelined=producer.tracks_acks,
        )
        #: partition -> epoch at which it was (last) assigned
        self._assigned: dict[int, int] = {}
        self._epoch = 0
        #: partition -> input offset the restored window state already reflects
        self._state_offsets: dict[int, int] = {}
        self.last_poll = 0.0
        self._last_stage_seconds: dict[str, float] = {}
        #: Set when a batch failed mid-way: from then on nothing is committed (the
        #: worker stops and the group replays from the last commit).
        self._failed: BaseException | None = None
        self._pauser = PartitionPauser(consumer, self._input)
        limit = producer.queue_limit
        self._high_water, self._low_water = limit // 2, limit // 10
        in_flight = (settings.max_inflight_batches + 1) * settings.max_batch
        if limit - self._high_water < in_flight:
            log.warning(
                "queue.buffering.max.messages=%d leaves less than (max_inflight_batches + 1) * "
                "max_batch = %d records above the backpressure mark: producing may block",
                limit,
                in_flight,
            )
        self._breakers = list(lookup_breakers or [])
        self._lookup_failures = 0
        self._lookup_retry_at = 0.0
        self._recoveries: list[float] = []
        self._labels_consumed = metrics.events_consumed_total.labels(topic=self._input)
        self._labels_enriched = metrics.events_produced_total.labels(topic=self._enriched)
        self._labels_corr_topic = metrics.events_produced_total.labels(topic=self._correlations)
        self._processed = {
            s: metrics.events_processed_total.labels(stage=s) for s in (VALIDATE, ENRICH, CORRELATE)
        }
        self._stage_time = {
            s: metrics.stage_duration_seconds.labels(stage=s) for s in (VALIDATE, ENRICH, CORRELATE)
        }
        self._export_known_series([rule.name for rule in settings.correlate.rules])

    @staticmethod
    def _export_known_series(rules: list[str]) -> None:
        """Export, at zero, every series whose label values are known before any event.

        A labelled child appears on /metrics only once it is first used, so a healthy
        worker that never rejected an event would show "no data" on its dashboards and
        in ``rate()`` instead of 0.
        """
        for rule in rules:
            metrics.correlations_total.labels(rule=rule)
        for error_class in ERROR_CLASSES:
            metrics.events_rejected_total.labels(stage=VALIDATE, error_class=error_class)
        metrics.events_rejected_total.labels(stage=CORRELATE, error_class="late")
        for stage in (VALIDATE, CORRELATE):
            metrics.dlq_records_total.labels(stage=stage)
        for kind in ("assign", "revoke", "lost"):
            metrics.rebalances_total.labels(kind=kind)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._eos:
            self._producer.init_transactions()
            self._producer.begin()
        self._consumer.subscribe(
            [self._input], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost
        )

    def close(self, wait: float = 10.0) -> bool:
        """Final checkpoint (unless something failed), then leave the group (SIGTERM).

        ``wait``: seconds the final checkpoint may retry transient failures. Returns
        whether everything processed was committed.
        """
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
        return self._failed or self.checkpointer.failed

    @property
    def paused(self) -> bool:
        return self._pauser.paused

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self._assigned)

    # -- fetching -------------------------------------------------------------------------------

    def fetch(self, timeout: float = 0.0) -> Batch | None:
        """Take up to ``max_batch`` records librdkafka already fetched (non-blocking by default).

        Called even while paused: ``consume`` also serves rebalances and keeps the
        member in its group.
        """
        self._flow_control()
        # librdkafka reads a negative timeout as "block forever": never pass one.
        records = self._consumer.consume(self.settings.max_batch, max(timeout, 0.0))
        self.last_poll = self._wall()
        if not records:
            return None
        return Batch(records, self._epoch)

    def _batch_failed(self, error: StreamError) -> None:
        """A producer error inside a batch: recover the transaction (exactly_once), or fail."""
        if self._eos and isinstance(error, TransactionAbortedError):
            self._recover_transaction(error, list(self._assigned))
            return
        self._failed = error
        raise error

    def _flow_control(self) -> None:
        owned = self._assigned.keys()
        pauser = self._pauser
        queued = len(self._producer)
        if queued >= self._high_water:
            pauser.hold(BACKPRESSURE, owned, f"({queued} records queued for the broker)")
        elif queued <= self._low_water and BACKPRESSURE in pauser.reasons:
            pauser.release(BACKPRESSURE, owned, f"({queued} records queued)")
        if (
            LOOKUP in pauser.reasons
            and self._wall() >= self._lookup_retry_at
            and all(b.state is not BreakerState.OPEN for b in self._breakers)
        ):
            # The next batch's lookup is the probe; if it fails, we pause again.
            pauser.release(LOOKUP, owned, "(lookup breaker lets a probe through)")

    # -- processing -----------------------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        """Process one batch; any exception poisons the runner so nothing more is committed."""
        if self.failed is not None:
            raise FatalError(f"not processing after an earlier failure: {self.failed}")
        start_ns = time.time_ns()
        try:
            self._process(batch)
        except KafkaException as exc:
            self._batch_failed(self._producer.explain(exc))
            return
        except TransactionAbortedError as exc:
            self._batch_failed(exc)
            return
        except BaseException as exc:
            self._failed = exc
            raise
        if self._tracer is not None:
            self._tracer.record_batch(
                start_ns=start_ns,
                end_ns=time.time_ns(),
                records=len(batch.records),
                traceparents=self._traceparents,
                stage_seconds=self._last_stage_seconds,
            )

    def _process(self, batch: Batch) -> None:
        records = batch.records
        if batch.epoch != self._epoch:
            records = self._still_owned(records, batch.epoch)
        good = [m for m in records if m.error() is None]
        if len(good) != len(records):
            self._handle_errors(m for m in records if m.error() is not None)
        if not good:
            return
        n = len(good)
        self._labels_consumed.inc(n)
        metrics.batch_size.observe(n)
        now_s = self._wall()
        parts = record_partitions(good)

        t0 = time.perf_counter()
        values = [m.value() for m in good]
        format_rejected: set[int] = set()
        if self._decoder is not None:
            try:
                values, format_rejects = self._decoder.decode_batch(self._input, values)
            except TransientError as exc:
                self._pause_for_dependency(good, "decode", str(exc))
                return  # nothing of this batch was written; it is fetched again after the pause
            if format_rejects:
                self._reject(good, format_rejects, DECODE)
                format_rejected = {r.position for r in format_rejects}
        try:
            result = self._validator.validate(values)
        except Exception as exc:  # a stage bug must not block the partition forever
            result = self._validate_isolating(values, exc)
        if format_rejected:  # already dead-lettered by the decoder, not "empty"
            result.rejects[:] = [r for r in result.rejects if r.position not in format_rejected]
        t1 = time.perf_counter()
        self._stage_time[VALIDATE].observe(t1 - t0)
        events, times, indices = result.events, result.event_times, result.indices

        raws = cast("list[bytes]", [values[i] for i in indices])  # validate rejects empty values
        try:
            enriched = self._enricher.enrich(events, times, raws)
            unprocessable: list[Reject] = []
        except Exception as exc:  # as above: isolate the event(s) the stage raises on
            enriched, kept, unprocessable = self._enrich_isolating(events, times, raws, exc)
            events = [events[j] for j in kept]
            times = [times[j] for j in kept]
            indices = [indices[j] for j in kept]
            unprocessable = [r._replace(position=result.indices[r.position]) for r in unprocessable]
        if enriched.pausing:
            self._pause_for_dependency(good, ENRICH, f"{enriched.pausing} events found no lookup")
            return  # nothing of this batch was written; it is fetched again after the pause
        self._lookup_failures = 0
        if result.rejects:
            self._reject(good, result.rejects, VALIDATE)
            self._count_failures(result.rejects)
        if enriched.kept is not None:
            # Joins rejected (missing: dlq) or dropped (missing: drop) some events.
            unprocessable += [r._replace(position=indices[r.position]) for r in enriched.rejects]
            kept_positions = enriched.kept
            events = [events[j] for j in kept_positions]
            times = [times[j] for j in kept_positions]
            indices = [indices[j] for j in kept_positions]
            if enriched.dropped:
                metrics.events_dropped_total.labels(stage=ENRICH).inc(enriched.dropped)
        if unprocessable:
            self._reject(good, unprocessable, ENRICH)
        self._processed[VALIDATE].inc(len(result.events))
        output_key = self._output_key
        if output_key is None:
            keys = [good[i].key() for i in indices]
        else:
            keys = [output_key(e) for e in events]
        outputs = enriched.values
        if self._encoder is not None:
            outputs = self._encoder.encode_values(self._enriched, outputs)
        self._producer.produce_values(
            self._enriched, outputs, keys, self._output_headers(good, indices)
        )
        t2 = time.perf_counter()
        self._stage_time[ENRICH].observe(t2 - t1)
        self._processed[ENRICH].inc(len(events))
        self._labels_enriched.inc(len(events))
        if enriched.degraded:
            metrics.enrichment_degraded_total.inc(enriched.degraded)
        if events:
            self._presence_sample = events[:: max(len(events) // 100, 1)]

        self._correlate(good, parts, events, times, indices, int(now_s * 1000))
        t3 = time.perf_counter()
        self._stage_time[CORRELATE].observe(t3 - t2)
        self._last_stage_seconds = {VALIDATE: t1 - t0, ENRICH: t2 - t1, CORRELATE: t3 - t2}

        nexts = self._next_offsets(good, parts)
        self.checkpointer.record_progress(nexts, n)
        if self._state_offsets:
            for p, nxt in nexts.items():
                if nxt >= self._state_offsets.get(p, nxt + 1):
                    del self._state_offsets[p]
        self._producer.poll()
        last_ts = good[-1].timestamp()[1]
        if last_ts > 0:
            metrics.end_to_end_latency_seconds.observe(max(self._wall() - last_ts / 1000.0, 0.0))
        if times:
            metrics.event_time_lag_seconds.observe(max(now_s - times[-1] / 1000.0, 0.0))

    def _output_headers(
        self, good: list[Message], indices: list[int]
    ) -> list[list[tuple[str, bytes]]]:
        """Lineage headers of each enriched record, plus its input's ``traceparent``.

        The pipeline's two headers are shared tuples; per record only the input
        position is formatted (``topic/partition/offset``).
        """
        base = self._lineage
        position = b"%s/%d/%d"
        topic = self._input.encode()
        chosen = [good[i] for i in indices]
        out: list[list[tuple[str, bytes]]] = [
            [*base, (LINEAGE_INPUT, position % (topic, m.partition(), m.offset()))] for m in chosen
        ]
        self._traceparents = []
        carried = [m.headers() for m in chosen]
        if not any(carried):
            return out
        for hdrs, record_headers in zip(carried, out, strict=True):
            parent = header_value(hdrs, TRACEPARENT) if hdrs else None
            if parent is None:
                continue
            self._traceparents.append(parent)
            record_headers.append((TRACEPARENT, parent))
            state = header_value(hdrs, TRACESTATE)
            if state:
                record_headers.append((TRACESTATE, state))
        return out

    def _count_failures(self, rejects: list[Reject]) -> None:
        """``stream_validation_failures_total{field,reason}`` (data quality, per batch)."""
        counts: Counter[tuple[str, str]] = Counter()
        for r in rejects:
            if r.error_class in (SCHEMA_VIOLATION, BAD_TIMESTAMP):
                counts[failure_labels(r.message)] += 1
            else:
                counts[("$", r.error_class)] += 1
        for (field, reason), n in counts.items():
            metrics.validation_failures_total.labels(field=field, reason=reason).inc(n)

    def _correlate(
        self,
        good: list[Message],
        parts: list[int],
        events: list[Any],
        times: list[int],
        indices: list[int],
        now_ms: int,
    ) -> None:
        by_part: dict[int, list[int]] = {}
        for j, i in enumerate(indices):
            p = parts[i]
            bucket = by_part.get(p)
            if bucket is None:
                by_part[p] = [j]
            else:
                bucket.append(j)
        applied = 0
        for p, js in by_part.items():
            skip_below = self._state_offsets.get(p)
            if skip_below is not None:
                # The restored state already reflects these records (crash between the
                # changelog flush and the offset commit): do not count them twice.
                js = [j for j in js if offset_of(good[indices[j]]) >= skip_below]
                if not js:
                    continue
            result = self._correlator.process(
                p,
                [events[j] for j in js],
                [times[j] for j in js],
                now_ms,
                record_offsets([good[indices[j]] for j in js]) if self._has_rules else None,
            )
            applied += len(js)
            for late in result.late_indices:
                self._dlq.write(
                    good[indices[js[late]]],
                    stage=CORRELATE,
                    error_class="late",
                    message="event arrived after its window closed",
                )
            if result.late_indices:
                metrics.events_rejected_total.labels(stage=CORRELATE, error_class="late").inc(
                    len(result.late_indices)
                )
                metrics.dlq_records_total.labels(stage=CORRELATE).inc(len(result.late_indices))
            self._emit(result.correlations, p)
        self._processed[CORRELATE].inc(applied)

    def _emit(self, correlations: list[Correlation], partition: int) -> None:
        """Produce correlation records of one input partition, with their lineage headers."""
        if not correlations:
            return
        produce = self._producer.produce
        base = self._lineage
        source = f"{self._input}/{partition}/"
        values = [encoder.encode(c) for c in correlations]
        if self._encoder is not None:
            values = self._encoder.encode_values(self._correlations, values)
        for c, value in zip(correlations, values, strict=True):
            key = "|".join([c.rule, *c.group.values()]).encode()
            headers = [*base, (LINEAGE_INPUT, f"{source}{c.first_offset}-{c.last_offset}".encode())]
            produce(self._correlations, value, key, headers=headers)
            metrics.correlations_total.labels(rule=c.rule).inc()
        self._labels_corr_topic.inc(len(correlations))

    def _reject(self, good: list[Message], rejects: list[Reject], stage: str) -> None:
        counts: Counter[str] = Counter()
        for r in rejects:
            self._dlq.write(
                good[r.position],
                stage=stage,
                error_class=r.error_class,
                message=r.message,
                attempts=ISOLATED_ATTEMPTS if r.error_class == UNPROCESSABLE else 1,
            )
            counts[r.error_class] += 1
        for cls, count in counts.items():
            metrics.events_rejected_total.labels(stage=stage, error_class=cls).inc(count)
        metrics.dlq_records_total.labels(stage=stage).inc(len(rejects))

    # -- poison isolation (only after a stage raised: never on the normal path) -----------------

    def _validate_isolating(self, values: list[bytes | None], error: Exception) -> ValidateResult:
        """Validate one record at a time; the records the stage raises on become rejects."""
        log.warning(
            "validate raised %s: %s on a batch of %d; isolating the records it fails on",
            type(error).__name__,
            error,
            len(values),
        )
        out = ValidateResult([], [], [], [])
        for i, value in enumerate(values):
            try:
                one = self._validator.validate([value])
            except Exception as exc:
                out.rejects.append(Reject(i, UNPROCESSABLE, f"{type(exc).__name__}: {exc}"))
                continue
            if one.events:
                out.events.append(one.events[0])
                out.event_times.append(one.event_times[0])
                out.indices.append(i)
            else:
                out.rejects.append(one.rejects[0]._replace(position=i))
        return out

    def _enrich_isolating(
        self, events: list[Any], times: list[int], raws: list[bytes], error: Exception
    ) -> tuple[EnrichResult, list[int], list[Reject]]:
        """Enrich one event at a time: the result for the events that work, their positions
        in ``events``, and rejects (positions in ``events``) for those the stage raises on."""
        log.warning(
            "enrich raised %s: %s on %d events; isolating the events it fails on",
            type(error).__name__,
            error,
            len(events),
        )
        values: list[bytes] = []
        kept: list[int] = []
        failed: list[Reject] = []
        unknown = degraded = 0
        for j, event in enumerate(events):
            try:
                one = self._enricher.enrich([event], [times[j]], [raws[j]])
            except Exception as exc:
                failed.append(Reject(j, UNPROCESSABLE, f"{type(exc).__name__}: {exc}"))
                continue
            if one.kept is not None and not one.kept:
                failed.extend(r._replace(position=j) for r in one.rejects)
                continue
            values.append(one.values[0])
            kept.append(j)
            unknown += one.unknown
            degraded += one.degraded
        return EnrichResult(values, None, [], 0, unknown, degraded), kept, failed

    @staticmethod
    def _next_offsets(good: list[Message], parts: list[int]) -> dict[int, int]:
        wanted = len(set(parts))
        nexts: dict[int, int] = {}
        for i in range(len(good) - 1, -1, -1):
            p = parts[i]
            if p not in nexts:
                nexts[p] = offset_of(good[i]) + 1
                if len(nexts) == wanted:
                    break
        return nexts

    def _still_owned(self, records: list[Message], epoch: int) -> list[Message]:
        assigned = self._assigned
        return [
            m for m in records if (e := assigned.get(partition_of(m))) is not None and e <= epoch
        ]

    def _handle_errors(self, errored: Iterable[Message]) -> None:
        for m in errored:
            err = m.error()
            assert err is not None
            metrics.errors_total.labels(stage="consume", error_class=err.name()).inc()
            if err.fatal():
                raise FatalError(f"consumer failed: {err.str()}")
            if err.code() in _NOT_ALLOWED:
                raise FatalError(f"consumer not allowed: {err.str()} (check the ACLs)")
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error on %s[%s]: %s", m.topic(), m.partition(), err.str())

    # -- periodic work --------------------------------------------------------------------------

    def tick(self, checkpoint: bool = True) -> None:
        """Close idle windows, checkpoint when due (unless the caller does that itself),
        refresh lag gauges (about every second).

        Raises once the runner has failed (also in a rebalance callback), so the
        worker stops.
        """
        now_ms = int(self._wall() * 1000)
        if self.failed is not None:
            raise FatalError(f"stopping after an earlier failure: {self.failed}")
        for partition, closed in self._correlator.advance_idle_by_partition(now_ms).items():
            self._emit(closed, partition)
        if checkpoint:
            self.maybe_checkpoint()
        self._update_gauges()

    def checkpoint_due(self) -> bool:
        return self.failed is None and self.checkpointer.due()

    def maybe_checkpoint(self) -> None:
        if self.checkpoint_due():
            self._checkpoint()

    def _checkpoint(self, partitions: list[int] | None = None, wait: float = 0.0) -> bool:
        """Checkpoint; an aborted transaction rewinds to the last commit instead of failing."""
        try:
            return self.checkpointer.checkpoint(partitions, wait=wait)
        except TransactionAbortedError as exc:
            keep = [p for p in self._assigned if p not in (partitions or ())]
            self._recover_transaction(exc, keep)
            return False

    def _recover_transaction(self, error: TransactionAbortedError, partitions: list[int]) -> None:
        """Start over from the last commit after the transaction broke (exactly_once).

        Aborted: just rewind. Producer unusable (its transaction timed out on the broker
        during an outage, or it is in an error state): replace it first. Fenced while
        other instances may share our transactional id (static membership): a successor
        took over, so stop. Too many recoveries in a row: stop too.
        """
        try:
            if isinstance(error, ProducerFencedError) and self.settings.group_instance_id:
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
            self._rewind_to_last_commit(partitions)
        except StreamError as exc:
            self._failed = exc
            raise

    def _update_gauges(self) -> None:
        for p in self._assigned:
            tp = TopicPartition(self._input, p)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except Exception:
                continue
            position = self.checkpointer.pending.get(p, self.checkpointer.committed.get(p))
            if high >= 0 and position is not None:
                metrics.consumer_lag.labels(topic=self._input, partition=str(p)).set(
                    max(high - position, 0)
                )
        sample = self._presence_sample
        if sample:
            for path, get in self._stages.optional_fields.items():
                present = sum(1 for e in sample if get(e) not in ABSENT)
                metrics.field_presence_ratio.labels(field=path).set(present / len(sample))
            self._presence_sample = []
        stats = self._correlator.stats()
        for rule, keys in stats.items():
            if rule == "bytes":
                metrics.window_state_bytes.set(keys)
            else:
                metrics.window_state_keys.labels(rule=rule).set(keys)

    # -- rebalance callbacks (run inside consume(), on the event-loop thread) -------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._eos and self.failed is None and self._assigned:
            # Commit the open transaction first: restoring can take longer than
            # transaction.timeout.ms, after which the broker would abort it.
            self._checkpoint(wait=REVOKE_CHECKPOINT_WAIT_S)
        self._epoch += 1
        for tp in partitions:
            self._restore(tp.partition)
            self._assigned[tp.partition] = self._epoch
            self.checkpointer.assigned.add(tp.partition)
        self._pauser.assigned([tp.partition for tp in partitions])
        metrics.rebalances_total.labels(kind="assign").inc()
        metrics.assigned_partitions.set(len(self._assigned))
        log.info("assigned partitions %s of %s", [tp.partition for tp in partitions], self._input)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions]
        try:
            if self.failed is None:
                # exactly_once: one transaction holds every partition's outputs, so it
                # is committed whole; at_least_once commits just the revoked offsets.
                done = self._checkpoint(
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
        self._drop(revoked)
        metrics.rebalances_total.labels(kind="revoke").inc()
        log.info("revoked partitions %s of %s", revoked, self._input)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = [tp.partition for tp in partitions]
        self.checkpointer.forget(lost)
        self._drop(lost)
        if self._eos and self.failed is None:
            # The open transaction holds outputs of the lost partitions, which their new
            # owner is producing too: drop it (a new producer instance aborts it for
            # sure, whatever state the session loss left the old one in) and redo the
            # partitions still owned.
            self._recover_transaction(
                ProducerResetNeeded(f"partitions {lost} lost"), list(self._assigned)
            )
        metrics.rebalances_total.labels(kind="lost").inc()
        log.warning("lost partitions %s of %s without commit", lost, self._input)

    def _drop(self, partitions: list[int]) -> None:
        self._epoch += 1
        for p in partitions:
            self._assigned.pop(p, None)
            self._state_offsets.pop(p, None)
            self.checkpointer.assigned.discard(p)
            self.checkpointer.forget([p])
            self.checkpointer.committed.pop(p, None)
            self._correlator.drop_partition(p)
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(self._input, str(p))
        self._pauser.revoked(partitions)
        metrics.assigned_partitions.set(len(self._assigned))

    # -- going back -----------------------------------------------------------------------------

    def _pause_for_dependency(self, batch: list[Message], stage: str, why: str) -> None:
        """A dependency is down (a lookup with ``on_failure: pause``, the schema registry):
        fetch this batch again once its breaker lets a probe through."""
        self._lookup_failures += 1
        self._lookup_retry_at = self._wall() + LOOKUP_RETRY.backoff_cap(self._lookup_failures)
        firsts: dict[int, int] = {}
        for m in batch:
            firsts.setdefault(partition_of(m), offset_of(m))
        self._seek_back(firsts)
        self._pauser.hold(LOOKUP, self._assigned.keys(), f"({why})")
        metrics.errors_total.labels(stage=stage, error_class="lookup_unavailable").inc()

    def _rewind_to_last_commit(self, partitions: list[int]) -> None:
        """Forget everything since the last commit: window state from the changelog and
        input positions from the committed offsets (after an aborted transaction)."""
        for p in partitions:
            self.checkpointer.forget([p])
            self._state_offsets.pop(p, None)
            self._correlator.drop_partition(p)
            self._restore(p)
        self._seek_back({}, partitions)

    def _seek_back(self, positions: dict[int, int], partitions: list[int] | None = None) -> None:
        """Seek ``partitions`` (default: all owned) back to ``positions`` or, for partitions
        without one, to the next unprocessed record; drop batches fetched before."""
        targets = list(self._assigned) if partitions is None else partitions
        unknown = []
        for p in targets:
            if p in positions:
                continue
            known = self.checkpointer.pending.get(p, self.checkpointer.committed.get(p))
            if known is None:
                unknown.append(p)
            else:
                positions[p] = known
        if unknown:
            positions.update(self._committed_positions(unknown))
        self._epoch += 1
        for p in self._assigned:
            self._assigned[p] = self._epoch
        try:
            for p in targets:
                self._consumer.seek(TopicPartition(self._input, p, positions[p]))
        except KafkaException as exc:
            raise FatalError(f"cannot seek {self._input} back: {exc.args[0]}") from None

    def _committed_positions(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets; the beginning where none (auto.offset.reset)."""
        tps = [TopicPartition(self._input, p) for p in partitions]
        try:
            committed = self._consumer.committed(tps, timeout=10)
        except KafkaException as exc:
            raise FatalError(f"cannot read committed offsets: {exc.args[0]}") from None
        return {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_BEGINNING for tp in committed}

    def _restore(self, partition: int) -> None:
        entries: list[tuple[bytes, bytes | None]] = []
        state_offset: int | None = None
        for key, value in self._read_changelog(partition):
            if key == STATE_OFFSET_KEY:
                state_offset = int(value) if value else None
            else:
                entries.append((key, value))
        self._correlator.restore(partition, entries)
        if state_offset is not None:
            self._state_offsets[partition] = state_offset
        log.info(
            "restored window state of partition %d: %d changelog entries, state at offset %s",
            partition,
            len(entries),
            state_offset,
        )
