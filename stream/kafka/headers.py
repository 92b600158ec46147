"""Kafka header names the processor reads and writes.

DLQ records keep the original key, value, timestamp and headers and add the
``dlq.*`` headers below (values are UTF-8 strings). ``stream dlq replay``
marks what it re-sends with ``REPLAYED`` so a record that fails again is not
replayed in a loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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

#: Headers as the processor writes them.
Headers = list[tuple[str, bytes]]
#: A header value as the client types it (``str`` only ever on headers built in Python).
HeaderValue = str | bytes | None
#: Headers as the client accepts and returns them (``Message.headers()``): (name, value)
#: pairs, or a dict; :data:`Headers` fits too.
AnyHeaders = dict[str, HeaderValue] | Sequence[tuple[str, HeaderValue]]


def header_items(headers: AnyHeaders | None) -> Iterator[tuple[str, bytes | None]]:
    """The (name, value) pairs of ``headers`` in order, ``str`` values as UTF-8."""
    for key, value in headers.items() if isinstance(headers, dict) else headers or ():
        yield key, value.encode() if isinstance(value, str) else value


def header_value(headers: AnyHeaders | None, name: str) -> bytes | None:
    """Return the last value of header ``name`` (Kafka allows repeats), or None."""
    if not headers:
        return None
    found: HeaderValue
    if isinstance(headers, dict):
        found = headers.get(name)
    else:
        found = None
        for key, value in headers:
            if key == name:
                found = value
    return found.encode() if isinstance(found, str) else found
