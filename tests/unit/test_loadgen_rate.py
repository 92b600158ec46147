"""Rate profile of the load generator: exact cumulative allowance, burst spikes."""

from __future__ import annotations

import pytest

from stream.errors import ConfigError
from stream.loadgen.rate import RateSchedule


def test_steady_rate_allows_rate_times_elapsed() -> None:
    schedule = RateSchedule(5000)
    assert schedule.allowed(0) == 0
    assert schedule.allowed(0.01) == 50
    assert schedule.allowed(2.0) == 10_000
    assert schedule.mean_rate == 5000


def test_allowance_is_cumulative_so_late_ticks_catch_up_exactly() -> None:
    schedule = RateSchedule(1000)
    ticks = [0.01 * i for i in range(1, 101)] + [1.37, 2.0]
    sent = 0
    for t in ticks:
        sent += schedule.allowed(t) - sent
    assert sent == 2000


def test_burst_spikes_to_three_times_in_the_last_two_seconds_of_each_ten() -> None:
    schedule = RateSchedule(1000, burst=True)
    assert schedule.rate_at(0.5) == 1000
    assert schedule.rate_at(8.5) == 3000
    assert schedule.rate_at(10.5) == 1000
    assert schedule.allowed(8.0) == 8000
    assert schedule.allowed(10.0) == 8000 + 6000
    assert schedule.allowed(19.0) == 14_000 + 8000 + 3000
    assert schedule.mean_rate == pytest.approx(1400)


def test_zero_rate_means_unlimited() -> None:
    assert RateSchedule(0).unlimited
    assert not RateSchedule(1).unlimited


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": -1}, "rate"),
        ({"rate": 1, "spike_s": 20}, "spike_s"),
        ({"rate": 1, "factor": 0.5}, "factor"),
    ],
)
def test_bad_schedule_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        RateSchedule(**kwargs)  # type: ignore[arg-type]
