"""Circuit breaker: every transition, the half-open probe, error-rate mode, metrics and logs."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from stream.errors import CircuitOpenError, ConfigError, TransientError
from stream.observability.metrics import REGISTRY
from stream.resilience.circuit_breaker import BreakerState, CircuitBreaker

_names = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unique(prefix: str) -> str:
    """Metric labels are process-global: each test gets its own breaker name."""
    return f"{prefix}-{next(_names)}"


def state_gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("stream_circuit_breaker_state", {"breaker": name})


def transitions(name: str, to_state: str) -> float:
    value = REGISTRY.get_sample_value(
        "stream_circuit_breaker_transitions_total", {"breaker": name, "to_state": to_state}
    )
    return 0.0 if value is None else value


def boom() -> None:
    raise TransientError("lookup failed")


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(TransientError):
            breaker.call(boom)


def test_starts_closed_with_gauge_zero() -> None:
    name = unique("fresh")
    breaker = CircuitBreaker(name)
    assert breaker.state is BreakerState.CLOSED
    assert state_gauge(name) == 0.0
    assert breaker.call(lambda: 42) == 42


def test_opens_after_consecutive_failures_and_refuses_without_calling() -> None:
    name = unique("consecutive")
    clock = FakeClock()
    breaker = CircuitBreaker(name, failure_threshold=3, recovery_timeout=30, clock=clock)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert state_gauge(name) == 2.0
    assert transitions(name, "open") == 1.0

    called: list[int] = []
    clock.now += 10
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: called.append(1))
    assert called == []
    assert info.value.name == name
    assert info.value.retry_after == pytest.approx(20.0)
    assert breaker.allow() is False


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(unique("reset"), failure_threshold=3)
    fail(breaker, 2)
    breaker.call(lambda: None)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_open_moves_to_half_open_after_recovery_timeout() -> None:
    name = unique("half-open")
    clock = FakeClock()
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_timeout=30, clock=clock)
    fail(breaker, 1)
    clock.now += 29.999
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(0.001)
    clock.now += 0.001
    assert breaker.state is BreakerState.HALF_OPEN
    assert state_gauge(name) == 1.0
    assert transitions(name, "half-open") == 1.0


def test_half_open_allows_exactly_one_probe_and_a_success_closes() -> None:
    name = unique("probe-ok")
    clock = FakeClock()
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_timeout=5, clock=clock)
    fail(breaker, 1)
    clock.now += 5

    assert breaker.allow() is True  # the probe
    assert breaker.allow() is False  # a second caller while the probe is out
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: None)
    assert info.value.retry_after == 0.0
    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    assert state_gauge(name) == 0.0
    assert transitions(name, "closed") == 1.0
    assert breaker.allow() is True


def test_a_failed_probe_reopens_and_restarts_the_timer() -> None:
    name = unique("probe-fail")
    clock = FakeClock()
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_timeout=5, clock=clock)
    fail(breaker, 1)
    clock.now += 5
    fail(breaker, 1)  # the probe fails
    assert breaker.state is BreakerState.OPEN
    assert state_gauge(name) == 2.0
    assert transitions(name, "open") == 2.0
    assert breaker.retry_after() == pytest.approx(5.0)
    clock.now += 4
    assert breaker.allow() is False
    clock.now += 1
    assert breaker.allow() is True


def test_several_half_open_probes_must_all_succeed_to_close() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        unique("probes3"),
        failure_threshold=1,
        recovery_timeout=1,
        half_open_max_calls=3,
        clock=clock,
    )
    fail(breaker, 1)
    clock.now += 1
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_error_rate_mode_needs_minimum_volume_then_trips_on_the_rate() -> None:
    name = unique("rate")
    breaker = CircuitBreaker(
        name,
        failure_threshold=None,
        error_rate_threshold=0.5,
        window_size=10,
        minimum_calls=4,
    )
    # F S F: 67 % but only 3 calls, below the minimum volume.
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    # 4th call, a success: 2/4 = 50 % >= threshold only counts when a failure is recorded.
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()  # 3/5 = 60 %
    assert breaker.state is BreakerState.OPEN
    assert transitions(name, "open") == 1.0


def test_error_rate_window_slides_so_old_failures_age_out() -> None:
    breaker = CircuitBreaker(
        unique("slide"),
        failure_threshold=None,
        error_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
    )
    # The rate is checked when a failure is recorded: F F reach 2 calls, below the volume.
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_success()  # window F F S S
    breaker.record_success()  # F S S S
    breaker.record_success()  # S S S S
    breaker.record_failure()  # S S S F = 25 %
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()  # S S F F = 50 %
    assert breaker.state is BreakerState.OPEN


def test_consecutive_and_rate_modes_combine_with_or() -> None:
    breaker = CircuitBreaker(
        unique("both"),
        failure_threshold=3,
        error_rate_threshold=0.9,
        window_size=100,
        minimum_calls=50,
    )
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN


def test_errors_outside_failure_on_count_as_success() -> None:
    class NotFound(Exception):
        pass

    def missing() -> None:
        raise NotFound("no such service")

    breaker = CircuitBreaker(unique("excluded"), failure_threshold=1, failure_on=(TransientError,))
    with pytest.raises(NotFound):
        breaker.call(missing)
    assert breaker.state is BreakerState.CLOSED


def test_results_arriving_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(unique("late"), failure_threshold=1, recovery_timeout=10, clock=clock)
    breaker.record_failure()
    clock.now += 3
    breaker.record_success()  # a call started before the breaker opened
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(7.0)


def test_cancelled_probe_gives_its_slot_back() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(unique("cancel"), failure_threshold=1, recovery_timeout=1, clock=clock)
    breaker.record_failure()
    clock.now += 1

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() is True


def test_each_transition_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    name = unique("logged")
    clock = FakeClock()
    breaker = CircuitBreaker(name, failure_threshold=2, recovery_timeout=1, clock=clock)
    with caplog.at_level(logging.INFO, logger="stream.resilience"):
        fail(breaker, 5)  # opens on the 2nd; the rest are refused without a transition
        clock.now += 1
        assert breaker.state is BreakerState.HALF_OPEN
        assert breaker.state is BreakerState.HALF_OPEN
        breaker.call(lambda: None)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "stream.resilience"]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "closed -> open" in lines[0][1]
    assert "2 consecutive failures" in lines[0][1]
    assert "lookup failed" in lines[0][1]
    assert "open -> half-open" in lines[1][1]
    assert "half-open -> closed" in lines[2][1]


def test_transition_counters_track_a_full_cycle() -> None:
    name = unique("cycle")
    clock = FakeClock()
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_timeout=1, clock=clock)
    for _ in range(3):
        breaker.record_failure()
        clock.now += 1
        assert breaker.allow()
        breaker.record_success()
    assert transitions(name, "open") == 3.0
    assert transitions(name, "half-open") == 3.0
    assert transitions(name, "closed") == 3.0
    assert state_gauge(name) == 0.0


def test_async_call_goes_through_the_same_state_machine() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(unique("async"), failure_threshold=2, recovery_timeout=1, clock=clock)

    async def ok() -> str:
        return "ok"

    async def down() -> str:
        raise TransientError("down")

    async def scenario() -> None:
        assert await breaker.call_async(ok) == "ok"
        for _ in range(2):
            with pytest.raises(TransientError):
                await breaker.call_async(down)
        with pytest.raises(CircuitOpenError):
            await breaker.call_async(ok)
        clock.now += 1
        assert await breaker.call_async(ok) == "ok"

    asyncio.run(scenario())
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": None, "error_rate_threshold": None},
        {"failure_threshold": 0},
        {"error_rate_threshold": 1.5},
        {"window_size": 5, "minimum_calls": 6},
        {"recovery_timeout": -1},
        {"half_open_max_calls": 0},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float | None]) -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(unique("bad"), **kwargs)  # type: ignore[arg-type]
