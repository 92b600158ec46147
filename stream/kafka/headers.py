"""Kafka header names the processor reads and writes.

DLQ records keep the original key, value, timestamp and headers and add the
``dlq.*`` headers below (values are UTF-8 strings). ``stream dlq replay``
marks what it re-sends with ``REPLAYED`` so a record that fails again is not
replayed in a loop.
"""

from __future__ import annotations

from typing import Final

DLQ_ORIGINAL_TOPIC: Final = "dlq.original.topic"
DLQ_ORIGINAL_PARTITION: Final = "dlq.original.partition"
DLQ_ORIGINAL_OFFSET: Final = "dlq.original.offset"
DLQ_ERROR_CLASS: Final = "dlq.error.class"
DLQ_ERROR_MESSAGE: Final = "dlq.error.message"
DLQ_STAGE: Final = "dlq.stage"
DLQ_ATTEMPTS: Final = "dlq.attempts"
DLQ_FAILED_AT: Final = "dlq.failed_at"
#: Set by ``stream dlq replay`` on records it sends back to the input topic.
REPLAYED: Final = "dlq.replayed"
#: W3C trace context, propagated from input to outputs.
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

Headers = list[tuple[str, bytes]]


def header_value(headers: Headers | None, name: str) -> bytes | None:
    """Return the last value of header ``name`` (Kafka allows repeats), or None."""
    if not headers:
        return None
    found: bytes | None = None
    for key, value in headers:
        if key == name:
            found = value
    return found
