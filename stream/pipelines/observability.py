"""Typed views of the bundled observability pipeline's records.

The worker does not use these: it decodes input with the schema compiled from
``observability.schema.json`` like any pipeline's. They serve code that reads or
writes this one shape — the load generator, the PostgreSQL sink, the benchmark's
peers and tests — with the same fast msgspec decoding.

The input contract (README "Input contract")::

    event_id    str, required
    type        str, required
    source      str, required (the emitting service)
    timestamp   required event time: RFC 3339 string with offset, or epoch ms
    severity    required: debug | info | warning | error | critical
    entity      optional str
    value       optional number
    attributes  optional object of str -> str | number | bool
    trace_id    optional str
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

Severity = Literal["debug", "info", "warning", "error", "critical"]

#: Severity rank used for ordering comparisons (``severity >= error``) and scoring.
SEVERITY_RANK: Final[dict[str, int]] = {
    "debug": 0,
    "info": 1,
    "warning": 2,
    "error": 3,
    "critical": 4,
}

AttributeValue = str | int | float | bool
#: RFC 3339 requires an offset; naive datetimes are rejected by the decoder.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, gc=False, omit_defaults=True):
    """One input event, decoded straight from the Kafka record value."""

    event_id: Annotated[str, msgspec.Meta(min_length=1)]
    type: Annotated[str, msgspec.Meta(min_length=1)]
    source: Annotated[str, msgspec.Meta(min_length=1)]
    timestamp: int | AwareDatetime
    severity: Severity
    entity: str | None = None
    value: float | None = None
    attributes: dict[str, AttributeValue] | None = None
    trace_id: str | None = None

    def event_time_ms(self) -> int:
        """Event time as epoch milliseconds, whichever form the producer used."""
        ts = self.timestamp
        if type(ts) is int:
            return ts
        assert isinstance(ts, datetime)
        return int(ts.timestamp() * 1000)


class Enrichment(msgspec.Struct, gc=False, omit_defaults=True):
    """What the enrich stage attaches. Shared by every event of one (source, severity)."""

    known_service: bool
    score: float
    team: str | None = None
    tier: int | None = None
    owner: str | None = None
    degraded: bool = False


class ServiceInfo(msgspec.Struct, gc=False, omit_defaults=True):
    """Reference data for one service (value of the compacted ``reference.services`` topic)."""

    team: str | None = None
    tier: int | None = None
    owner: str | None = None


event_decoder: Final = msgspec.json.Decoder(Event)
service_info_decoder: Final = msgspec.json.Decoder(ServiceInfo)
encoder: Final = msgspec.json.Encoder()


def encode_enriched(event: Event, event_time_ms: int, enrichment_json: bytes) -> bytes:
    """Encode an enriched event (the normalised input plus ``event_time_ms`` and ``enrichment``)."""
    body = encoder.encode(event)
    return b'%s,"event_time_ms":%d,"enrichment":%s}' % (body[:-1], event_time_ms, enrichment_json)


class EnrichedEvent(msgspec.Struct, gc=False, omit_defaults=True):
    """Decoding model for ``events.enriched`` records (consumers, tests, sinks)."""

    event_id: str
    type: str
    source: str
    timestamp: int | AwareDatetime
    severity: Severity
    event_time_ms: int
    enrichment: Enrichment
    entity: str | None = None
    value: float | None = None
    attributes: dict[str, AttributeValue] | None = None
    trace_id: str | None = None


enriched_decoder: Final = msgspec.json.Decoder(EnrichedEvent)
