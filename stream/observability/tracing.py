"""OpenTelemetry tracing: one sampled span per batch, never one per event.

A batch span follows the messaging semantic conventions (``messaging.system=kafka``,
``messaging.destination.name``, ``messaging.operation.type=process``,
``messaging.batch.message_count``, ``messaging.consumer.group.name``) and is
*linked* to the W3C trace contexts of up to ``MAX_LINKS`` input records that
carried a ``traceparent`` header — the OpenTelemetry pattern for batch
consumers. Stage timings are span attributes; the span is recorded after the
batch with its real start and end time, so nothing wraps the hot loop. The
``traceparent`` header itself is
copied from each input record to its enriched output by the runner, so
downstream consumers continue the producer's trace.

Export is configured by the standard ``OTEL_*`` variables: with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set (and ``stream-processor[otlp]`` installed)
spans go over OTLP/HTTP; ``OTEL_TRACES_EXPORTER=console`` prints them. When
tracing is disabled (the default) the runner holds ``None`` instead of a tracer
and pays one ``is None`` check per batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from stream import __version__

log = logging.getLogger(__name__)

#: At most this many input trace contexts are linked from one batch span.
MAX_LINKS = 32


def parse_traceparent(value: bytes) -> SpanContext | None:
    """Parse a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``); None if malformed."""
    try:
        version, trace_id, span_id, flags = value.decode("ascii").split("-")
        if len(version) != 2 or len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2:
            return None
        tid, sid = int(trace_id, 16), int(span_id, 16)
        if tid == 0 or sid == 0:
            return None
        return SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(int(flags, 16)))
    except (UnicodeDecodeError, ValueError):
        return None


def _exporter_from_env() -> SpanExporter | None:
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        return ConsoleSpanExporter()
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
                "pip install 'stream-processor[otlp]'"
            )
            return None
        return OTLPSpanExporter()  # type: ignore[no-any-return]
    return None


class BatchTracer:
    """Creates sampled batch spans for one input topic and consumer group."""

    def __init__(
        self,
        *,
        topic: str,
        group: str,
        sample_ratio: float,
        exporter: SpanExporter | None = None,
        provider: TracerProvider | None = None,
    ) -> None:
        if provider is None:
            provider = TracerProvider(
                resource=Resource.create(
                    {
                        "service.name": os.environ.get("OTEL_SERVICE_NAME", "stream-worker"),
                        "service.version": __version__,
                    }
                ),
                sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            )
            exporter = exporter or _exporter_from_env()
            if exporter is not None:
                provider.add_span_processor(BatchSpanProcessor(exporter))
        self.provider = provider
        self._tracer = provider.get_tracer("stream.runner", __version__)
        self._attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": group,
        }
        self._name = f"process {topic}"

    def record_batch(
        self,
        *,
        start_ns: int,
        end_ns: int,
        records: int,
        traceparents: Sequence[bytes],
        stage_seconds: dict[str, float],
    ) -> None:
        """Record one batch span after the fact (sampling decides whether it is kept)."""
        links = []
        for raw in traceparents[:MAX_LINKS]:
            ctx = parse_traceparent(raw)
            if ctx is not None:
                links.append(Link(ctx))
        attributes = dict(self._attributes)
        attributes["messaging.batch.message_count"] = records
        for stage, seconds in stage_seconds.items():
            attributes[f"stream.stage.{stage}.duration_s"] = seconds
        span = self._tracer.start_span(
            self._name,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=start_ns,
        )
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        self.provider.shutdown()
