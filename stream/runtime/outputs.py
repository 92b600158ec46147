"""Output routing: everything a finished batch writes, with the pipeline's lineage headers.

The last agent of the chain hands each finished :class:`~stream.runtime.work.WorkBatch`
to :meth:`OutputRouter.route`: dead-letter records (the original record plus
``dlq.*`` headers), enriched records (keyed by the pipeline's ``key`` field or the
input key), records user stages emitted to their own topics, and — from the
correlate stage and the idle-window timer — correlation records. All of it is
queued on the one producer the checkpoint flushes (at_least_once) or commits in
its transaction (exactly_once), so every output is covered by the checkpoint that
commits its input offsets.

Lineage (README "Lineage"): every record carries ``stream.pipeline`` and
``stream.pipeline.digest``; enriched and extra records ``stream.input`` =
``topic/partition/offset`` of their input record; correlations
``topic/partition/first-last``.

Late events (``correlate.late_policy: topic``) are no failure: their enriched
record is written like any other, and the original record (its key, value,
headers and timestamp) goes to the late topic too, with ``stream.late.rule``,
``stream.late.window_end`` and ``stream.input``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from confluent_kafka import Message

from stream.config import Settings
from stream.kafka.dlq import DlqWriter
from stream.kafka.headers import TRACEPARENT, TRACESTATE, header_value
from stream.models import Correlation, encoder
from stream.observability import metrics
from stream.runtime.work import Rejected, WorkBatch
from stream.stages import Reject

LINEAGE_PIPELINE: Final = "stream.pipeline"
LINEAGE_DIGEST: Final = "stream.pipeline.digest"
LINEAGE_INPUT: Final = "stream.input"
#: Headers of a late-topic record (``late_policy: topic``): the rule it was late for and
#: the end (epoch ms) of the window that had closed.
LATE_RULE: Final = "stream.late.rule"
LATE_WINDOW_END: Final = "stream.late.window_end"

Headers = list[tuple[str, bytes]]


class Producer(Protocol):
    """What routing needs of :class:`stream.kafka.producer.OutputProducer` (and test doubles)."""

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int = -1,
        headers: Headers | None = None,
        timestamp: int = 0,
    ) -> None: ...

    def produce_values(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: Sequence[Headers | None] | None = None,
    ) -> None: ...


class Encoder(Protocol):
    """Output values in the output format (:class:`stream.formats.output.OutputEncoder`)."""

    def encode_records(self, topic: str, values: list[bytes]) -> tuple[list[bytes], list[Reject]]:
        """The values that fit, encoded in order, and a reject for each one that does not."""
        ...

    def encode_values(self, topic: str, values: list[bytes]) -> list[bytes]: ...


def lineage_headers(settings: Settings) -> Headers:
    """The headers naming the pipeline that wrote a record (same for every record)."""
    return [
        (LINEAGE_PIPELINE, settings.pipeline.encode()),
        (LINEAGE_DIGEST, settings.pipeline_digest.encode()),
    ]


class OutputRouter:
    """Writes a finished batch's outputs and the correlations of one partition."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        *,
        output_key: Callable[[Any], bytes | None] | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        topics = settings.topics
        self._producer = producer
        self._input = topics.input
        self._enriched = topics.enriched
        self._correlations = topics.correlations
        self._late = settings.late_topic
        self._output_key = output_key
        self._encoder = encoder
        self.lineage = lineage_headers(settings)
        #: Lineage on every enriched record (``lineage: full``); costs ~1 µs per record.
        self._per_record = settings.lineage != "off"
        #: ``lineage: input``: only the input position on enriched records.
        self._record_base = self.lineage if settings.lineage == "full" else []
        #: ``b"<input>/<partition>/"`` per input partition seen (``stream.input``'s prefix).
        self._prefixes: dict[int, bytes] = {}
        self._dlq = DlqWriter(producer, topics.dlq, extra_headers=self.lineage)  # type: ignore[arg-type]
        #: ``traceparent`` values of the last routed batch (its span links to them).
        self.traceparents: list[bytes] = []
        self._labels_enriched = metrics.events_produced_total.labels(topic=self._enriched)
        self._labels_correlations = metrics.events_produced_total.labels(topic=self._correlations)
        self._labels_late = metrics.events_produced_total.labels(topic=self._late)

    def route(self, work: WorkBatch) -> None:
        """Queue every output of a finished batch."""
        if work.events and self._encoder is not None:
            self._encode(work, self._encoder)
        if work.rejects:
            self.dead_letter(work)
        if work.events:
            self._enriched_records(work)
        if work.late:
            self._late_records(work)
        for x in work.extra:
            m = work.records[x.position]
            headers = [*self.lineage, (LINEAGE_INPUT, _position(self._input, m))]
            self._producer.produce(x.topic, x.value, x.key, headers=headers)
            metrics.events_produced_total.labels(topic=x.topic).inc()

    def _encode(self, work: WorkBatch, encoder: Encoder) -> None:
        """Enriched values in the output format. A record its output schema refuses goes
        to the DLQ (stage ``encode``) and the rest of the batch on: one bad record must
        not stop the worker, and in = enriched + DLQ still holds."""
        encoded, refused = encoder.encode_records(self._enriched, work.outputs)
        if refused:
            indices = work.indices
            work.rejects.extend(
                Rejected(indices[r.position], "encode", r.error_class, r.message) for r in refused
            )
            bad = {r.position for r in refused}
            work.keep([j for j in range(len(work.events)) if j not in bad])
        work.outputs = encoded

    def dead_letter(self, work: WorkBatch) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        records = work.records
        for r in work.rejects:
            self._dlq.write(
                records[r.position],
                stage=r.stage,
                error_class=r.error_class,
                message=r.message,
                attempts=r.attempts,
            )
            counts[(r.stage, r.error_class)] += 1
        for (stage, error_class), n in counts.items():
            metrics.events_rejected_total.labels(stage=stage, error_class=error_class).inc(n)
            metrics.dlq_records_total.labels(stage=stage).inc(n)

    def _late_records(self, work: WorkBatch) -> None:
        """The original record of each late event, to the late topic (README "Late events")."""
        produce = self._producer.produce
        for late in work.late:
            m = work.records[late.position]
            headers = [
                *(m.headers() or []),
                *self.lineage,
                (LINEAGE_INPUT, _position(self._input, m)),
                (LATE_RULE, late.rule.encode()),
                (LATE_WINDOW_END, str(late.window_end).encode()),
            ]
            produce(
                self._late, m.value(), m.key(), headers=headers, timestamp=max(m.timestamp()[1], 0)
            )
        self._labels_late.inc(len(work.late))

    def _enriched_records(self, work: WorkBatch) -> None:
        chosen = [work.records[i] for i in work.indices]
        if self._output_key is None:
            keys = [m.key() for m in chosen]
        else:
            output_key = self._output_key
            keys = [output_key(e) for e in work.events]
        values = work.outputs  # already in the output format (route encoded them)
        self._producer.produce_values(self._enriched, values, keys, self._headers(work, chosen))
        self._labels_enriched.inc(len(values))

    def _headers(self, work: WorkBatch, chosen: list[Message]) -> list[Headers | None] | None:
        """Lineage headers of each enriched record, plus its input's ``traceparent``.

        The pipeline's two headers are shared tuples; per record only the input
        position is formatted (``topic/partition/offset``, from a per-partition prefix
        and the batch's known partitions: one C call and one format per record).
        """
        base = self._record_base
        self.traceparents = []
        carried = [m.headers() for m in chosen]
        traced = any(carried)
        if self._per_record:
            parts = work.partitions
            prefix = self._prefixes
            for p in set(parts).difference(prefix):
                prefix[p] = b"%s/%d/" % (self._input.encode(), p)
            if base:
                out: list[Headers | None] = [
                    [*base, (LINEAGE_INPUT, b"%s%d" % (prefix[parts[i]], m.offset()))]
                    for i, m in zip(work.indices, chosen, strict=True)
                ]
            else:
                out = [
                    [(LINEAGE_INPUT, b"%s%d" % (prefix[parts[i]], m.offset()))]
                    for i, m in zip(work.indices, chosen, strict=True)
                ]
        elif traced:
            out = [[] for _ in chosen]
        else:
            return None
        if not traced:
            return out
        for hdrs, record_headers in zip(carried, out, strict=True):
            parent = header_value(hdrs, TRACEPARENT) if hdrs else None
            if parent is None or record_headers is None:
                continue
            self.traceparents.append(parent)
            record_headers.append((TRACEPARENT, parent))
            state = header_value(hdrs, TRACESTATE)
            if state:
                record_headers.append((TRACESTATE, state))
        return out

    def correlations(self, correlations: list[Correlation], partition: int) -> None:
        """Produce correlation records of one input partition, with their lineage headers."""
        if not correlations:
            return
        values = [encoder.encode(c) for c in correlations]
        if self._encoder is not None:
            values = self._encoder.encode_values(self._correlations, values)
        source = f"{self._input}/{partition}/"
        produce = self._producer.produce
        for c, value in zip(correlations, values, strict=True):
            key = "|".join([c.rule, *c.group.values()]).encode()
            span = f"{source}{c.first_offset}-{c.last_offset}".encode()
            produce(self._correlations, value, key, headers=[*self.lineage, (LINEAGE_INPUT, span)])
            metrics.correlations_total.labels(rule=c.rule).inc()
        self._labels_correlations.inc(len(correlations))


def _position(topic: str, m: Message) -> bytes:
    return f"{topic}/{m.partition()}/{m.offset()}".encode()
