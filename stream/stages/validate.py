"""Validate stage: raw record values -> decoded events, or rejects with a reason.

Decoding straight into the pipeline's compiled schema (a ``gc=False`` msgspec
Struct built at start-up, :mod:`stream.schema`) checks types, required fields,
enums and constraints in one C call. What a schema cannot say — size limit, event
time present and within sane bounds — is checked here. Error classes
(``dlq.error.class``) are a small fixed set so they can label metrics: ``empty``,
``too_large``, ``malformed_json``, ``schema_violation``, ``bad_timestamp``; the
message names the field path and the broken constraint (msgspec's own words, e.g.
``Expected `int` >= 1 - at `$.items[0].qty```).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

import msgspec

from stream.stages import Reject
from stream.stages.rfc3339 import rfc3339_ms

EMPTY = "empty"
TOO_LARGE = "too_large"
MALFORMED_JSON = "malformed_json"
SCHEMA_VIOLATION = "schema_violation"
BAD_TIMESTAMP = "bad_timestamp"
ERROR_CLASSES: Final = (EMPTY, TOO_LARGE, MALFORMED_JSON, SCHEMA_VIOLATION, BAD_TIMESTAMP)


class ValidateResult(NamedTuple):
    """Valid events in input order; ``indices[i]`` is the input position of ``events[i]``."""

    events: list[Any]
    event_times: list[int]
    indices: list[int]
    rejects: list[Reject]


class EventTime:
    """Reads an event's time as epoch milliseconds from its event-time field.

    ``get`` reads the field; the value may be an int (epoch ms, or seconds with
    ``unit="s"``), a float, an aware ``datetime`` (a ``format: date-time`` string
    the decoder parsed) or an RFC 3339 string. Anything else is ``None``.
    """

    def __init__(self, get: Callable[[Any], Any], path: str, unit: str = "ms") -> None:
        self.get = get
        self.path = path
        self.scale = 1000 if unit == "s" else 1
        #: msgspec's path of the field in error messages: ``$.timestamp``, ``$.meta.ts``.
        self.error_path = "`$." + path + "`"
        #: RFC 3339 strings -> epoch ms, memoised per (second, offset) (:mod:`.rfc3339`).
        self.from_string = rfc3339_ms()

    def to_ms(self, value: Any) -> int | None:
        if type(value) is int:
            return value * self.scale
        if isinstance(value, datetime):
            return int(value.timestamp() * 1000) if value.tzinfo is not None else None
        if isinstance(value, float):
            return int(value * self.scale)
        if isinstance(value, str):
            return self.from_string(value)
        return None


def plain_event_time(field: str = "timestamp") -> EventTime:
    """An :class:`EventTime` reading a top-level attribute (tests, simple pipelines)."""
    from operator import attrgetter

    return EventTime(attrgetter(field), field)


class Validator:
    """Checks a batch of record values against the pipeline's schema."""

    def __init__(
        self,
        decoder: msgspec.json.Decoder[Any],
        event_time: EventTime,
        *,
        max_event_bytes: int = 64 * 1024,
        max_future_ms: int = 24 * 3600 * 1000,
        min_event_time_ms: int = 946_684_800_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._decoder = decoder
        self._time = event_time
        self._max_bytes = max_event_bytes
        self._max_future_ms = max_future_ms
        self._min_time = min_event_time_ms
        self._clock = clock

    def validate(self, values: Sequence[bytes | None]) -> ValidateResult:
        events: list[Any] = []
        times: list[int] = []
        indices: list[int] = []
        rejects: list[Reject] = []
        decode = self._decoder.decode
        get_time = self._time.get
        to_ms = self._time.to_ms
        from_string = self._time.from_string
        time_path = self._time.error_path
        ms_ints = self._time.scale == 1
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
                message = str(exc)
                cls = BAD_TIMESTAMP if time_path in message else SCHEMA_VIOLATION
                rejects.append(Reject(i, cls, message))
                continue
            except msgspec.DecodeError as exc:
                rejects.append(Reject(i, MALFORMED_JSON, str(exc)))
                continue
            except UnicodeDecodeError as exc:  # msgspec raises this for invalid UTF-8 in strings
                rejects.append(Reject(i, MALFORMED_JSON, f"invalid UTF-8: {exc.reason}"))
                continue
            ts = get_time(event)
            cls = ts.__class__
            if cls is int and ms_ints:
                ms = ts
            elif cls is datetime:  # a `format: date-time` string msgspec parsed
                ms = int(ts.timestamp() * 1000) if ts.tzinfo is not None else None
            elif cls is str:
                ms = from_string(ts)
            else:
                ms = to_ms(ts)
            if ms is None:
                rejects.append(
                    Reject(i, BAD_TIMESTAMP, f"no usable event time at {time_path}: {ts!r}")
                )
                continue
            if ms > max_time or ms < min_time:
                rejects.append(
                    Reject(i, BAD_TIMESTAMP, f"event time {ms} ms is outside the accepted range")
                )
                continue
            events.append(event)
            times.append(ms)
            indices.append(i)
        return ValidateResult(events, times, indices, rejects)


_AT: Final = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_REQUIRED: Final = re.compile(r"missing required field `(?P<field>[^`]+)`")
_INDEX: Final = re.compile(r"\[\d+\]")


def failure_labels(message: str) -> tuple[str, str]:
    """``(field, reason)`` of a schema violation, for ``stream_validation_failures_total``.

    ``Expected `int` >= 1 - at `$.items[0].qty``` -> ``("items[].qty", "Expected `int` >= 1")``;
    array indices are folded so the label set stays bounded by the schema.
    """
    match = _AT.search(message)
    reason = message[: match.start()] if match else message
    path = match.group("path").lstrip(".") if match else ""
    required = _REQUIRED.search(reason)
    if required:
        path = f"{path}.{required.group('field')}" if path else required.group("field")
        reason = "missing required field"
    return _INDEX.sub("[]", path) or "$", reason[:120]
