"""RFC 3339 event times: the memoised converter gives exactly what fromisoformat gives."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.stages import rfc3339
from stream.stages.rfc3339 import reference_ms, rfc3339_ms

ZONES = ["Z", "z", "+05:30", "-08:00", "+00:00", "-00:00", "+14:00", "+23:59", "+24:00"]
ODD = ["+0530", "", "+05:30:15", "+05:3x", "+05:30.5", ",123Z", ".1Z", ".12345Z", ".123456Z"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-02T18:57:00.123Z", reference_ms("2026-12-02T18:57:00.123Z")),
        ("2026-12-02T18:57:00+05:30", 1_796_218_020_000),
        ("2026-12-02T18:57:00", None),  # no offset: RFC 3339 requires one
        ("2026-12-02T18:57:00.5Z", 1_796_237_820_500),  # other fraction lengths: reference path
        ("2026-12-02 18:57:00Z", 1_796_237_820_000),  # what fromisoformat accepts stays accepted
        ("2026-13-02T18:57:00Z", None),
        ("2026-12-02T18:57.45.316Z", None),  # "HH:MM.fraction" is not memoised
        ("not a time", None),
    ],
)
def test_known_values(value: str, expected: int | None) -> None:
    convert = rfc3339_ms()
    assert convert(value) == expected
    assert convert(value) == expected  # from the memo


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rfc3339, "MEMO_MAX", 3)
    convert = rfc3339_ms()
    values = [f"2026-12-02T18:57:{s:02d}.001Z" for s in range(10)]
    assert [convert(v) for v in values] == [reference_ms(v) for v in values]


def _time_strings() -> st.SearchStrategy[str]:
    wall = st.tuples(
        st.sampled_from([1, 1970, 1999, 2024, 2026, 9999]),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 60),
    ).map(lambda t: "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*t))
    fraction = st.one_of(
        st.just(""),
        st.integers(0, 999).map(lambda f: f".{f:03d}"),
        st.integers(0, 10**7).map(lambda f: f".{f}"),
    )
    text = st.builds(lambda w, f, z: w + f + z, wall, fraction, st.sampled_from(ZONES + ODD))
    mutated = st.tuples(text, st.integers(0, 40), st.sampled_from(list("T -:.0a+Z\u0661"))).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
    )
    return st.one_of(text, mutated)


@settings(max_examples=500, deadline=None)
@given(values=st.lists(_time_strings(), min_size=1, max_size=5))
def test_same_as_fromisoformat(values: list[str]) -> None:
    convert = rfc3339_ms()
    for value in values + values:  # the second round is served by the memo
        assert convert(value) == reference_ms(value), value


def test_reference_is_timestamp_times_1000() -> None:
    value = "2026-12-02T18:57:00.123+05:30"
    assert reference_ms(value) == int(datetime.fromisoformat(value).timestamp() * 1000)
