"""Batch spans follow the messaging conventions and link to input trace contexts."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from stream.observability.tracing import MAX_LINKS, BatchTracer, parse_traceparent

PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def tracer(sampler: object = ALWAYS_ON) -> tuple[BatchTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return BatchTracer(topic="events", group="g", sample_ratio=1.0, provider=provider), exporter


def test_parse_traceparent() -> None:
    ctx = parse_traceparent(PARENT)
    assert ctx is not None
    assert ctx.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert ctx.span_id == 0x00F067AA0BA902B7
    assert ctx.is_remote and ctx.trace_flags.sampled
    for bad in (
        b"",
        b"garbage",
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
        b"\xff\xfe",
        b"00-xyz-abc-01",
    ):
        assert parse_traceparent(bad) is None


def test_batch_span_has_messaging_attributes_links_and_times() -> None:
    t, exporter = tracer()
    t.record_batch(
        start_ns=1_000,
        end_ns=5_000,
        records=7,
        traceparents=[PARENT, b"bad"] * 40,
        stage_seconds={"validate": 0.5},
    )
    (span,) = exporter.get_finished_spans()
    assert span.name == "process events"
    assert span.attributes is not None
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.destination.name"] == "events"
    assert span.attributes["messaging.consumer.group.name"] == "g"
    assert span.attributes["messaging.batch.message_count"] == 7
    assert span.attributes["stream.stage.validate.duration_s"] == 0.5
    assert (span.start_time, span.end_time) == (1_000, 5_000)
    assert len(span.links) == MAX_LINKS // 2, "malformed contexts skipped, links capped"
    assert span.links[0].context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736


def test_unsampled_batches_export_nothing() -> None:
    t, exporter = tracer(ALWAYS_OFF)
    t.record_batch(start_ns=1, end_ns=2, records=1, traceparents=[PARENT], stage_seconds={})
    assert exporter.get_finished_spans() == ()
