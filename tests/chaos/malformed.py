"""Hypothesis strategies for record values that violate the input contract *by construction*.

Every value drawn here must be rejected by the validate stage, whatever the
draw: random bytes that are not a JSON object, proper prefixes of a valid event
(a truncated object is never valid JSON), events over the size limit, required
fields with a wrong type or missing, nesting where only scalars are allowed
(thousands of levels deep, to probe recursion limits), an unknown severity, and
invalid UTF-8. So a fuzzed record that reaches ``events.enriched`` is a bug,
not bad luck.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

REQUIRED = ("event_id", "type", "source", "timestamp", "severity")
SEVERITIES = ("debug", "info", "warning", "error", "critical")
#: Above the validate stage's default ``max_event_bytes`` (64 KiB).
HUGE = 70 * 1024

_words = st.text(alphabet=string.ascii_letters + " _-", min_size=1, max_size=20)


def _valid_event() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "event_id": _words,
            "type": _words,
            "source": _words,
            "timestamp": st.integers(min_value=1_700_000_000_000, max_value=1_800_000_000_000),
            "severity": st.sampled_from(SEVERITIES),
        },
        optional={
            "entity": _words,
            "value": st.floats(allow_nan=False, allow_infinity=False),
            "attributes": st.dictionaries(_words, st.integers() | _words, max_size=3),
        },
    )


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


_not_an_object = st.binary(max_size=400).filter(lambda b: not b.lstrip().startswith(b"{"))


def _proper_prefixes(event: dict[str, Any]) -> st.SearchStrategy[bytes]:
    body = _encode(event)
    return st.integers(min_value=0, max_value=len(body) - 1).map(lambda cut: body[:cut])


_truncated = _valid_event().flatmap(_proper_prefixes)

_huge = st.tuples(_valid_event(), st.sampled_from(["event_id", "source", "type", "entity"])).map(
    lambda t: _encode({**t[0], t[1]: "x" * HUGE})
)

#: Values of the wrong JSON type for a string field / for the timestamp.
_not_a_string = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(_words, st.integers(), max_size=2),
)
_not_a_timestamp = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(_words, st.integers(), max_size=2),
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=12),  # no digits: no date
)


def _with_field(field: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.tuples(_valid_event(), values).map(lambda t: _encode({**t[0], field: t[1]}))


_wrong_type = st.one_of(
    *[_with_field(f, _not_a_string) for f in ("event_id", "type", "source", "severity")],
    _with_field("timestamp", _not_a_timestamp),
)

_missing_field = st.tuples(_valid_event(), st.sampled_from(REQUIRED)).map(
    lambda t: _encode({k: v for k, v in t[0].items() if k != t[1]})
)

_bad_severity = _with_field("severity", st.text(max_size=10).filter(lambda s: s not in SEVERITIES))


def _nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


_deep = st.tuples(_valid_event(), st.integers(min_value=1, max_value=5_000)).map(
    lambda t: (
        _encode({k: v for k, v in t[0].items() if k != "attributes"})[:-1]
        + b', "attributes": {"deep": '
        + _nested(t[1], "1").encode()
        + b"}}"
    )
)
_deep_top_level = st.integers(min_value=1, max_value=20_000).map(
    lambda d: _nested(d, "{}").encode()
)

_bad_utf8 = _valid_event().map(
    lambda e: _encode(e).replace(b'"event_id": "', b'"event_id": "\xff\xfe', 1)
)

malformed_values: st.SearchStrategy[bytes] = st.one_of(
    _not_an_object,
    _truncated,
    _huge,
    _wrong_type,
    _missing_field,
    _bad_severity,
    _deep,
    _deep_top_level,
    _bad_utf8,
)
