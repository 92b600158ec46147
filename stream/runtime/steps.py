"""The built-in links of the chain: validate, enrich and correlate over a WorkBatch.

Each step adapts one pure stage (:mod:`stream.stages`) to a
:class:`~stream.runtime.work.WorkBatch`: it feeds the stage the batch's lists, puts
the stage's rejects into the batch's dead-letter list and keeps the survivors.

A stage that raises on a batch is a bug, not a reason to block the partition: the
step runs the stage again one record at a time and dead-letters the records it
raises on as ``unprocessable`` (``dlq.attempts: 2``). A dependency that is down
and asked to be waited for (a lookup with ``on_failure: pause``, the schema
registry) raises :class:`DependencyUnavailable`: the runner re-fetches the batch
after a pause.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from stream.errors import TransientError
from stream.observability import metrics
from stream.runtime.work import Late, Rejected, WorkBatch
from stream.stages import Reject
from stream.stages.correlate import Correlator
from stream.stages.enrich import Enricher, EnrichResult
from stream.stages.validate import (
    BAD_TIMESTAMP,
    SCHEMA_VIOLATION,
    ValidateResult,
    Validator,
    failure_labels,
)

log = logging.getLogger(__name__)

DECODE, VALIDATE, ENRICH, CORRELATE = "decode", "validate", "enrich", "correlate"
#: ``dlq.error.class`` of a record a stage raised on (a stage bug, not a contract violation).
UNPROCESSABLE: Final = "unprocessable"
#: Its ``dlq.attempts``: once in its batch, once alone.
ISOLATED_ATTEMPTS: Final = 2
LATE: Final = "late"


class DependencyUnavailable(TransientError):
    """A step cannot go on until a dependency is back; the batch is fetched again later."""

    def __init__(self, stage: str, why: str) -> None:
        super().__init__(f"{stage}: {why}")
        self.stage = stage
        self.why = why


class Step(Protocol):
    """One link of the chain: transforms a batch in place."""

    name: str

    def run(self, work: WorkBatch) -> None: ...


class RecordDecoder(Protocol):
    def decode_batch(
        self, topic: str, values: list[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]: ...


class ValidateStep:
    """Decode (other formats), then check every record against the schema."""

    name = VALIDATE

    def __init__(self, validator: Validator, decoder: RecordDecoder | None, topic: str) -> None:
        self._validator = validator
        self._decoder = decoder
        self._topic = topic

    def run(self, work: WorkBatch) -> None:
        live = work.live_positions()
        records = work.records
        if work.dead:
            values: list[bytes | None] = [records[i].value() for i in live]
        else:
            values = [m.value() for m in records]
        format_rejected: set[int] = set()
        if self._decoder is not None:
            try:
                values, format_rejects = self._decoder.decode_batch(self._topic, values)
            except TransientError as exc:
                raise DependencyUnavailable(DECODE, str(exc)) from None
            work.rejects += [
                Rejected(live[r.position], DECODE, r.error_class, r.message) for r in format_rejects
            ]
            format_rejected = {r.position for r in format_rejects}
        try:
            result = self._validator.validate(values)
        except Exception as exc:  # a stage bug must not block the partition forever
            result = self._isolating(values, exc)
        rejects = result.rejects
        if format_rejected:  # already dead-lettered by the decoder, not "empty"
            rejects = [r for r in rejects if r.position not in format_rejected]
        if rejects:
            work.rejects += [
                Rejected(
                    live[r.position],
                    VALIDATE,
                    r.error_class,
                    r.message,
                    ISOLATED_ATTEMPTS if r.error_class == UNPROCESSABLE else 1,
                )
                for r in rejects
            ]
            _count_failures(rejects)
        work.values = values
        work.events = result.events
        work.times = result.event_times
        work.indices = [live[i] for i in result.indices] if work.dead else result.indices
        # validate rejects empty values, so every kept value is bytes
        work.raws = cast("list[bytes]", [values[i] for i in result.indices])

    def _isolating(self, values: list[bytes | None], error: Exception) -> ValidateResult:
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


def _count_failures(rejects: list[Reject]) -> None:
    """``stream_validation_failures_total{field,reason}`` (data quality, per batch)."""
    counts: Counter[tuple[str, str]] = Counter()
    for r in rejects:
        if r.error_class in (SCHEMA_VIOLATION, BAD_TIMESTAMP):
            counts[failure_labels(r.message)] += 1
        else:
            counts[("$", r.error_class)] += 1
    for (field, reason), n in counts.items():
        metrics.validation_failures_total.labels(field=field, reason=reason).inc(n)


class EnrichStep:
    """Joins and derived fields; the enriched value of every surviving event."""

    name = ENRICH

    def __init__(self, enricher: Enricher) -> None:
        self._enricher = enricher
        #: A sample of the last batch's events (data-quality presence gauges).
        self.sample: list[Any] = []

    def run(self, work: WorkBatch) -> None:
        try:
            result = self._enricher.enrich(work.events, work.times, work.raws)
        except Exception as exc:  # as for validate: isolate the event(s) the stage raises on
            result = self._isolating(work, exc)
        if result.pausing:
            raise DependencyUnavailable(ENRICH, f"{result.pausing} events found no lookup")
        if result.kept is not None:
            # Joins rejected (missing: dlq) or dropped (missing: drop) some events.
            work.rejects += [
                Rejected(
                    work.indices[r.position],
                    ENRICH,
                    r.error_class,
                    r.message,
                    ISOLATED_ATTEMPTS if r.error_class == UNPROCESSABLE else 1,
                )
                for r in result.rejects
            ]
            work.keep(result.kept)
            if result.dropped:
                work.dropped += result.dropped
                metrics.events_dropped_total.labels(stage=ENRICH).inc(result.dropped)
        work.outputs = result.values
        if result.degraded:
            work.degraded += result.degraded
            metrics.enrichment_degraded_total.inc(result.degraded)
        if work.events:
            self.sample = work.events[:: max(len(work.events) // 100, 1)]

    def _isolating(self, work: WorkBatch, error: Exception) -> EnrichResult:
        """Enrich one event at a time; the events the stage raises on become rejects."""
        log.warning(
            "enrich raised %s: %s on %d events; isolating the events it fails on",
            type(error).__name__,
            error,
            len(work.events),
        )
        values: list[bytes] = []
        kept: list[int] = []
        failed: list[Reject] = []
        degraded = pausing = 0
        for j, event in enumerate(work.events):
            try:
                one = self._enricher.enrich([event], [work.times[j]], [work.raws[j]])
            except Exception as exc:
                failed.append(Reject(j, UNPROCESSABLE, f"{type(exc).__name__}: {exc}"))
                continue
            if one.kept is not None and not one.kept:
                failed.extend(r._replace(position=j) for r in one.rejects)
                continue
            values.append(one.values[0])
            kept.append(j)
            degraded += one.degraded
            pausing += one.pausing
        return EnrichResult(values, kept, failed, 0, 0, degraded, pausing)


class CorrelateStep:
    """Windows over each partition's events; correlations go into the batch's outputs."""

    name = CORRELATE

    def __init__(
        self,
        correlator: Correlator,
        emit: Callable[[list[Any], int], None],
        state_offsets: dict[int, int],
        with_offsets: bool,
    ) -> None:
        self._correlator = correlator
        self._emit = emit
        #: partition -> input offset the restored window state already reflects
        self._state_offsets = state_offsets
        self._with_offsets = with_offsets
        self._late_to_topic = correlator.late_policy == "topic"

    def run(self, work: WorkBatch) -> None:
        by_part: dict[int, list[int]] = {}
        parts, indices, records = work.partitions, work.indices, work.records
        for j, i in enumerate(indices):
            p = parts[i]
            bucket = by_part.get(p)
            if bucket is None:
                by_part[p] = [j]
            else:
                bucket.append(j)
        events, times = work.events, work.times
        for p, js in by_part.items():
            skip_below = self._state_offsets.get(p)
            if skip_below is not None:
                # The restored state already reflects these records (crash between the
                # changelog flush and the offset commit): do not count them twice.
                js = [j for j in js if records[indices[j]].offset() >= skip_below]  # type: ignore[operator]
                if not js:
                    continue
            offsets = [records[indices[j]].offset() for j in js] if self._with_offsets else None
            result = self._correlator.process(
                p,
                [events[j] for j in js],
                [times[j] for j in js],
                work.now_ms,
                offsets,  # type: ignore[arg-type]
            )
            if result.late_indices:
                if self._late_to_topic:  # late_policy: topic — not a failure, no DLQ record
                    work.late += [
                        Late(indices[js[k]], why.rule, why.window_end)
                        for k, why in zip(result.late_indices, result.late_for, strict=True)
                    ]
                else:  # late_policy: dlq
                    work.rejects += [
                        Rejected(
                            indices[js[k]],
                            CORRELATE,
                            LATE,
                            f"event arrived after its window closed (rule {why.rule}, "
                            f"window end {why.window_end})",
                        )
                        for k, why in zip(result.late_indices, result.late_for, strict=True)
                    ]
            self._emit(result.correlations, p)
