"""Validate stage: each contract violation rejected with its class; valid events in order."""

from __future__ import annotations

import orjson
import pytest

import tests.support.observability as obs
from stream.stages import validate as v
from stream.stages.validate import Validator

NOW_MS = 1_767_225_600_000


def event(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "event_id": "e1",
        "type": "http_request",
        "source": "checkout",
        "timestamp": NOW_MS - 1000,
        "severity": "info",
    }
    body.update(overrides)
    return orjson.dumps({k: val for k, val in body.items() if val is not ...})


@pytest.fixture
def validator() -> Validator:
    return obs.validator(max_event_bytes=2048, max_future_ms=60_000, clock=lambda: NOW_MS / 1000)


def test_valid_events_pass_with_times_and_positions(validator: Validator) -> None:
    values = [
        event(event_id="a"),
        event(
            event_id="b",
            timestamp="2026-01-01T00:00:00.500+00:00",
            entity="u1",
            value=3,
            attributes={"route": "/pay", "ms": 12.5, "ok": True},
            trace_id="t",
        ),
    ]
    result = validator.validate(values)
    assert [e.event_id for e in result.events] == ["a", "b"]
    assert result.event_times == [NOW_MS - 1000, NOW_MS + 500]
    assert result.indices == [0, 1]
    assert result.rejects == []
    assert result.events[1].attributes == {
        "route": "/pay",
        "ms": 12.5,
        "ok": True,
    }


@pytest.mark.parametrize(
    ("value", "error_class"),
    [
        (None, v.EMPTY),
        (b"", v.EMPTY),
        (b"{not json", v.MALFORMED_JSON),
        (b'{"event_id": "\xff\xfe", "type": "t"}', v.MALFORMED_JSON),  # invalid UTF-8
        (b"[1, 2]", v.SCHEMA_VIOLATION),
        (event(event_id=...), v.SCHEMA_VIOLATION),
        (event(source=...), v.SCHEMA_VIOLATION),
        (event(event_id=""), v.SCHEMA_VIOLATION),
        (event(type=7), v.SCHEMA_VIOLATION),
        (event(severity="fatal"), v.SCHEMA_VIOLATION),
        (event(value="high"), v.SCHEMA_VIOLATION),
        (event(attributes={"nested": {"a": 1}}), v.SCHEMA_VIOLATION),
        (event(timestamp="yesterday"), v.BAD_TIMESTAMP),
        (event(timestamp="2026-01-01T00:00:00"), v.BAD_TIMESTAMP),  # RFC 3339 needs an offset
        (event(timestamp=NOW_MS + 3_600_000), v.BAD_TIMESTAMP),  # too far in the future
        (event(timestamp="2999-01-01T00:00:00Z"), v.BAD_TIMESTAMP),
        (event(timestamp=12), v.BAD_TIMESTAMP),  # before 2000
        (event(attributes={"pad": "x" * 4096}), v.TOO_LARGE),
    ],
)
def test_each_violation_is_rejected_with_its_class(
    validator: Validator, value: bytes | None, error_class: str
) -> None:
    result = validator.validate([event(event_id="ok-1"), value, event(event_id="ok-2")])
    assert [e.event_id for e in result.events] == ["ok-1", "ok-2"]
    assert result.indices == [0, 2]
    assert [(r.position, r.error_class) for r in result.rejects] == [(1, error_class)]
    assert result.rejects[0].message


def test_counts_in_equal_valid_plus_rejected(validator: Validator) -> None:
    values = [event(event_id=str(i)) if i % 3 else b"garbage" for i in range(300)]
    result = validator.validate(values)
    assert len(result.events) + len(result.rejects) == 300
    assert len(result.rejects) == 100
