"""Retry policy: backoff caps, full jitter, attempt and time bounds, metrics, async twin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from stream.errors import (
    BackpressureError,
    ConfigError,
    TransientError,
    ValidationError,
)
from stream.observability.metrics import REGISTRY
from stream.resilience.retry import (
    RetryExhausted,
    RetryPolicy,
    next_delay,
    retry_async,
    retry_call,
)


class FakeTime:
    """A clock that only moves when the code under test sleeps (or a call takes time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def failing(
    times: int, error: Exception, result: str = "ok"
) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return fn, calls


def retries_metric(operation: str) -> float:
    value = REGISTRY.get_sample_value("stream_retries_total", {"operation": operation})
    return 0.0 if value is None else value


def always(value: float) -> Callable[[], float]:
    return lambda: value


def test_backoff_cap_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(initial=0.1, multiplier=2.0, max_delay=1.0)
    caps = [policy.backoff_cap(n) for n in range(1, 7)]
    assert caps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.backoff_cap(10_000) == 1.0  # no overflow for absurd counts


def test_full_jitter_scales_the_cap_by_the_random_draw() -> None:
    policy = RetryPolicy(initial=0.5, multiplier=3.0, max_delay=100, total_timeout=None)
    error = TransientError("x")
    assert next_delay(policy, 1, 0.0, error, always(0.0)) == 0.0
    assert next_delay(policy, 1, 0.0, error, always(0.5)) == pytest.approx(0.25)
    assert next_delay(policy, 3, 0.0, error, always(0.5)) == pytest.approx(0.5 * 4.5)


def test_succeeds_after_transient_failures_with_jittered_sleeps() -> None:
    t = FakeTime()
    fn, calls = failing(3, TransientError("flaky"))
    policy = RetryPolicy(initial=1.0, multiplier=2.0, max_delay=10.0, max_attempts=5)
    before = retries_metric("unit.flaky")
    result = retry_call(
        fn,
        policy=policy,
        operation="unit.flaky",
        sleep=t.sleep,
        clock=t.clock,
        rand=always(0.5),
    )
    assert result == "ok"
    assert len(calls) == 4
    assert t.sleeps == pytest.approx([0.5, 1.0, 2.0])
    assert retries_metric("unit.flaky") - before == 3


def test_gives_up_after_max_attempts_and_reports_them() -> None:
    t = FakeTime()
    error = TransientError("down")
    fn, calls = failing(100, error)
    with pytest.raises(RetryExhausted) as info:
        retry_call(
            fn,
            policy=RetryPolicy(max_attempts=3, total_timeout=None),
            operation="unit.max",
            sleep=t.sleep,
            clock=t.clock,
            rand=always(1.0),
        )
    assert len(calls) == 3
    assert info.value.attempts == 3
    assert info.value.last_error is error
    assert info.value.__cause__ is error
    assert info.value.operation == "unit.max"
    assert len(t.sleeps) == 2


def test_stops_before_a_sleep_that_would_overrun_the_time_budget() -> None:
    t = FakeTime()
    fn, calls = failing(100, TransientError("down"))
    # caps 1, 2, 4, 8 with rand=1: attempts start at t=0, 1, 3, 7; the next sleep (8) would end
    # at 15 > 10, so no fifth attempt is started.
    policy = RetryPolicy(
        initial=1.0, multiplier=2.0, max_delay=60, max_attempts=50, total_timeout=10
    )
    with pytest.raises(RetryExhausted) as info:
        retry_call(fn, policy=policy, sleep=t.sleep, clock=t.clock, rand=always(1.0))
    assert info.value.attempts == 4
    assert len(calls) == 4
    assert t.now == 7.0
    assert info.value.elapsed == 7.0


def test_time_spent_inside_calls_counts_against_the_budget() -> None:
    t = FakeTime()
    calls: list[int] = []

    def slow_failure() -> None:
        calls.append(1)
        t.now += 4.0  # each attempt times out after 4 s
        raise TransientError("timeout")

    policy = RetryPolicy(initial=0.1, max_attempts=10, total_timeout=10)
    with pytest.raises(RetryExhausted) as info:
        retry_call(slow_failure, policy=policy, sleep=t.sleep, clock=t.clock, rand=always(0.0))
    # attempts at t=0, 4, 8; after the third, elapsed 12 > 10.
    assert info.value.attempts == 3


def test_non_retryable_errors_propagate_immediately_unwrapped() -> None:
    t = FakeTime()
    error = ValidationError("bad record")
    fn, calls = failing(5, error)
    with pytest.raises(ValidationError) as info:
        retry_call(fn, policy=RetryPolicy(), sleep=t.sleep, clock=t.clock)
    assert info.value is error
    assert len(calls) == 1
    assert t.sleeps == []


def test_retry_on_selects_which_errors_are_retried() -> None:
    t = FakeTime()
    fn, calls = failing(2, ConnectionError("reset"))
    result = retry_call(
        fn, policy=RetryPolicy(), retry_on=(ConnectionError,), sleep=t.sleep, clock=t.clock
    )
    assert result == "ok"
    assert len(calls) == 3


def test_retry_after_hint_is_a_lower_bound_on_the_delay() -> None:
    t = FakeTime()
    fn, _ = failing(1, BackpressureError(retry_after=3.0))
    retry_call(
        fn,
        policy=RetryPolicy(initial=0.1, total_timeout=None),
        sleep=t.sleep,
        clock=t.clock,
        rand=always(1.0),
    )
    assert t.sleeps == [3.0]


def test_on_retry_sees_attempt_delay_and_error() -> None:
    t = FakeTime()
    error = TransientError("flaky")
    fn, _ = failing(2, error)
    seen: list[tuple[int, float, BaseException]] = []
    retry_call(
        fn,
        policy=RetryPolicy(initial=1.0, multiplier=2.0),
        sleep=t.sleep,
        clock=t.clock,
        rand=always(1.0),
        on_retry=lambda attempt, delay, err: seen.append((attempt, delay, err)),
    )
    assert seen == [(1, 1.0, error), (2, 2.0, error)]


def test_single_attempt_policy_never_retries() -> None:
    t = FakeTime()
    fn, calls = failing(1, TransientError("x"))
    with pytest.raises(RetryExhausted) as info:
        retry_call(fn, policy=RetryPolicy(max_attempts=1), sleep=t.sleep, clock=t.clock)
    assert info.value.attempts == 1
    assert len(calls) == 1
    assert t.sleeps == []


def test_operation_label_defaults_to_the_function_name() -> None:
    t = FakeTime()
    calls: list[int] = []

    def lookup_service() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise TransientError("x")
        return 7

    before = retries_metric(lookup_service.__qualname__)
    assert retry_call(lookup_service, policy=RetryPolicy(), sleep=t.sleep, clock=t.clock) == 7
    assert retries_metric(lookup_service.__qualname__) - before == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": -1}, "retry.initial"),
        ({"multiplier": 0.5}, "retry.multiplier"),
        ({"initial": 2, "max_delay": 1}, "retry.max_delay"),
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"total_timeout": 0}, "retry.total_timeout"),
    ],
)
def test_invalid_policies_are_rejected_naming_the_field(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_async_variant_retries_and_exhausts() -> None:
    t = FakeTime()
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("flaky")
        return "done"

    async def down() -> str:
        raise TransientError("down")

    before = retries_metric("unit.async")
    result = asyncio.run(
        retry_async(
            flaky,
            policy=RetryPolicy(initial=1.0),
            operation="unit.async",
            sleep=t.async_sleep,
            clock=t.clock,
            rand=always(1.0),
        )
    )
    assert result == "done"
    assert t.sleeps == [1.0, 2.0]
    assert retries_metric("unit.async") - before == 2

    with pytest.raises(RetryExhausted) as info:
        asyncio.run(
            retry_async(
                down,
                policy=RetryPolicy(max_attempts=4, total_timeout=None),
                sleep=t.async_sleep,
                clock=t.clock,
            )
        )
    assert info.value.attempts == 4
