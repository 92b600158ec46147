"""Validate stage: raw record values -> decoded events, or rejects with a reason.

Decoding straight into ``stream.models.Event`` (a ``gc=False`` msgspec Struct)
checks types, required fields and the severity enum in one C call. What msgspec
cannot express — size limit, event time within sane bounds — is checked here.
Error classes (``dlq.error.class``) are a small fixed set so they can label
metrics: ``empty``, ``too_large``, ``malformed_json``, ``schema_violation``,
``bad_timestamp``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NamedTuple

import msgspec

from stream.models import Event, event_decoder
from stream.stages import Reject

EMPTY = "empty"
TOO_LARGE = "too_large"
MALFORMED_JSON = "malformed_json"
SCHEMA_VIOLATION = "schema_violation"
BAD_TIMESTAMP = "bad_timestamp"


class ValidateResult(NamedTuple):
    """Valid events in input order; ``indices[i]`` is the input position of ``events[i]``."""

    events: list[Event]
    event_times: list[int]
    indices: list[int]
    rejects: list[Reject]


class Validator:
    """Checks a batch of record values against the input contract."""

    def __init__(
        self,
        *,
        max_event_bytes: int = 64 * 1024,
        max_future_ms: int = 24 * 3600 * 1000,
        min_event_time_ms: int = 946_684_800_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_bytes = max_event_bytes
        self._max_future_ms = max_future_ms
        self._min_time = min_event_time_ms
        self._clock = clock

    def validate(self, values: Sequence[bytes | None]) -> ValidateResult:
        events: list[Event] = []
        times: list[int] = []
        indices: list[int] = []
        rejects: list[Reject] = []
        decode = event_decoder.decode
        max_bytes = self._max_bytes
        min_time = self._min_time
        max_time = int(self._clock() * 1000) + self._max_future_ms
        for i, raw in enumerate(values):
            if not raw:
                rejects.append(Reject(i, EMPTY, "record has no value"))
                continue
            if len(raw) > max_bytes:
                rejects.append(
                    Reject(i, TOO_LARGE, f"record is {len(raw)} bytes; the limit is {max_bytes}")
                )
                continue
            try:
                event = decode(raw)
            except msgspec.ValidationError as exc:
                cls = BAD_TIMESTAMP if "$.timestamp" in str(exc) else SCHEMA_VIOLATION
                rejects.append(Reject(i, cls, str(exc)))
                continue
            except msgspec.DecodeError as exc:
                rejects.append(Reject(i, MALFORMED_JSON, str(exc)))
                continue
            except UnicodeDecodeError as exc:  # msgspec raises this for invalid UTF-8 in strings
                rejects.append(Reject(i, MALFORMED_JSON, f"invalid UTF-8: {exc.reason}"))
                continue
            ts = event.timestamp
            ms = ts if type(ts) is int else _datetime_ms(ts)  # type: ignore[arg-type]
            if ms > max_time or ms < min_time:
                rejects.append(
                    Reject(i, BAD_TIMESTAMP, f"event time {ms} ms is outside the accepted range")
                )
                continue
            events.append(event)
            times.append(ms)
            indices.append(i)
        return ValidateResult(events, times, indices, rejects)


def _datetime_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)
