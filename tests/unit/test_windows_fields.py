"""Compiled match predicates, group keys and value extractors."""

from __future__ import annotations

import pytest

from stream.pipelines.observability import Event
from stream.windows.fields import (
    Filter,
    group_labels,
    key_extractor,
    value_extractor,
    values_at_least,
)
from tests.support.observability import FIELDS


def _event(i: int, **fields: object) -> Event:
    base: dict[str, object] = {
        "event_id": f"e{i}",
        "type": "request",
        "source": "api",
        "timestamp": 1_000 + i,
        "severity": "info",
    }
    base.update(fields)
    return Event(**base)  # type: ignore[arg-type]


EVENTS = [
    _event(0),
    _event(1, severity="error", entity="u1", value=3.0),
    _event(2, severity="critical", source="db", attributes={"region": "eu", "retries": 2}),
    _event(3, severity="warning", type="deploy", attributes={"region": "us"}),
    _event(4, severity="error", source="db", value=7.5, attributes={"latency": 120}),
]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"severity": "error"}, [1, 4]),
        ({"severity": ["error", "critical"]}, [1, 2, 4]),
        ({"severity_at_least": "warning"}, [1, 2, 3, 4]),
        ({"severity_at_least": "critical"}, [2]),
        ({"source": "db", "severity": "error"}, [4]),
        ({"attributes.region": "eu"}, [2]),
        ({"attributes.region": ["eu", "us"]}, [2, 3]),
        ({"attributes.missing": "x"}, []),
        ({"value": [3.0, 7.5]}, [1, 4]),
        ({"entity": "u1"}, [1]),
        ({"type": "') or True or ('"}, []),  # values are data, never code
    ],
)
def test_selector(match: dict[str, object], expected: list[int]) -> None:
    select = Filter(match, fields=FIELDS).selector()
    assert select(EVENTS) == expected
    predicate = Filter(match, fields=FIELDS).predicate()
    assert [i for i, e in enumerate(EVENTS) if predicate(e)] == expected


def test_require_and_numeric_fields() -> None:
    assert Filter(fields=FIELDS, require=["entity"]).selector()(EVENTS) == [1]
    assert Filter(fields=FIELDS, require=["attributes.region"]).selector()(EVENTS) == [2, 3]
    assert Filter(fields=FIELDS, numeric=["value"]).selector()(EVENTS) == [1, 4]
    assert Filter(fields=FIELDS, numeric=["attributes.latency"]).selector()(EVENTS) == [4]
    assert Filter(fields=FIELDS, numeric=["attributes.region"]).selector()(EVENTS) == []


def test_extra_predicate() -> None:
    select = Filter(
        {"severity": ["error", "critical"]}, predicate=lambda e: e.source == "db", fields=FIELDS
    )
    assert select.selector()(EVENTS) == [2, 4]


def test_key_extractors() -> None:
    assert key_extractor(()) is None
    single = key_extractor(["source"], FIELDS)
    assert single is not None and single(EVENTS[2]) == "db"
    pair = key_extractor(["source", "severity"], FIELDS)
    assert pair is not None and pair(EVENTS[4]) == ("db", "error")
    attr = key_extractor(["attributes.region"], FIELDS)
    assert attr is not None and attr(EVENTS[3]) == "us"
    mixed = key_extractor(["source", "attributes.region"], FIELDS)
    assert mixed is not None and mixed(EVENTS[2]) == ("db", "eu")


def test_value_extractors_and_labels() -> None:
    assert value_extractor("value", FIELDS)(EVENTS[4]) == 7.5
    assert value_extractor("attributes.latency", FIELDS)(EVENTS[4]) == 120
    assert group_labels((), ()) == {}
    assert group_labels(("source",), "db") == {"source": "db"}
    assert group_labels(("source", "attributes.retries"), ("db", 2)) == {
        "source": "db",
        "attributes.retries": "2",
    }


def test_field_paths() -> None:
    FIELDS.check("attributes.x")  # a free-form object: any key under it
    for bad in ("nope", "source.x", "event_time_ms"):
        with pytest.raises(ValueError, match="unknown field"):
            FIELDS.check(bad)
    assert values_at_least(FIELDS, "severity", "error") == {"error", "critical"}
    with pytest.raises(ValueError, match="not one value"):
        values_at_least(FIELDS, "severity", "fatal")
    with pytest.raises(ValueError, match="declares no enum"):
        values_at_least(FIELDS, "source", "x")


def test_at_least_on_any_enum_field() -> None:
    assert Filter({"at_least": {"severity": "warning"}}, fields=FIELDS).selector()(EVENTS) == [
        1,
        2,
        3,
        4,
    ]
