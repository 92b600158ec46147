"""Retry with exponential backoff and full jitter, bounded by attempts and by time.

Why full jitter: when many workers hit the same failing dependency at once,
backoff without jitter makes them retry in lock-step and hammer it again on
every tick. "Full jitter" (sleep a uniformly random time between 0 and the
exponential cap) spreads the retries out and, per AWS's analysis, finishes the
overall work sooner than equal or decorrelated jitter.

Why two bounds: ``max_attempts`` alone lets a slow dependency (each attempt
timing out after seconds) hold a batch for minutes; ``total_timeout`` alone
lets a fast-failing one be called hundreds of times. Retrying stops at
whichever comes first, and no attempt is *started* after the time budget has
run out: a sleep that would end past the budget is not taken.

An error that carries ``retry_after`` (``BackpressureError``,
``CircuitOpenError``) is waited out: the delay is at least that hint.

When retrying gives up, :class:`RetryExhausted` carries the number of attempts
so the caller can write it into the ``dlq.attempts`` header. Errors that are
not retryable propagate at once, unwrapped. Each retry (not the first
attempt) increments ``stream_retries_total{operation}``.

Clock, sleep and random source are injectable so tests are instant and exact.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from stream.errors import ConfigError, StreamError, TransientError
from stream.observability import metrics

T = TypeVar("T")

ExceptionTypes = tuple[type[BaseException], ...]


class OnRetry(Protocol):
    """Called before each sleep: the attempt that just failed (1-based), the delay, the error."""

    def __call__(self, attempt: int, delay: float, error: BaseException) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry.

    ``initial``: cap of the first backoff, seconds. ``multiplier``: growth of
    the cap per retry. ``max_delay``: upper bound of any one cap.
    ``max_attempts``: total calls including the first (1 = no retry).
    ``total_timeout``: seconds from the first call after which no new attempt
    starts (``None``: no time bound).
    """

    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 10.0
    max_attempts: int = 5
    total_timeout: float | None = 30.0

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ConfigError("retry.initial", "must be >= 0")
        if self.multiplier < 1:
            raise ConfigError("retry.multiplier", "must be >= 1")
        if self.max_delay < self.initial:
            raise ConfigError("retry.max_delay", "must be >= retry.initial")
        if self.max_attempts < 1:
            raise ConfigError("retry.max_attempts", "must be >= 1")
        if self.total_timeout is not None and self.total_timeout <= 0:
            raise ConfigError("retry.total_timeout", "must be > 0 (or unset)")

    def backoff_cap(self, retry_number: int) -> float:
        """Upper bound of the sleep before retry ``retry_number`` (1 = first retry)."""
        exponent = retry_number - 1
        # Avoid float overflow for absurd attempt counts: past max_delay it no longer matters.
        cap = self.initial
        for _ in range(exponent):
            cap *= self.multiplier
            if cap >= self.max_delay:
                return self.max_delay
        return min(cap, self.max_delay)


class RetryExhausted(StreamError):
    """Retrying gave up. The last error is ``last_error`` (and ``__cause__``)."""

    def __init__(
        self, operation: str, attempts: int, elapsed: float, last_error: BaseException
    ) -> None:
        super().__init__(
            f"{operation}: gave up after {attempts} attempt(s) in {elapsed:.2f}s: "
            f"{type(last_error).__name__}: {last_error}"
        )
        self.operation = operation
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


def next_delay(
    policy: RetryPolicy,
    attempts: int,
    elapsed: float,
    error: BaseException,
    rand: Callable[[], float],
) -> float | None:
    """Delay before the next attempt, or ``None`` when retrying must stop.

    ``attempts`` calls have been made and ``elapsed`` seconds have passed since
    the first one started.
    """
    if attempts >= policy.max_attempts:
        return None
    delay = rand() * policy.backoff_cap(attempts)
    hint = getattr(error, "retry_after", None)
    if isinstance(hint, int | float) and hint > delay:
        delay = float(hint)
    if policy.total_timeout is not None and elapsed + delay > policy.total_timeout:
        return None
    return delay


def _operation_name(fn: Callable[..., object], operation: str | None) -> str:
    if operation is not None:
        return operation
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def retry_call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    retry_on: ExceptionTypes = (TransientError,),
    operation: str | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``fn()`` until it returns, retrying errors in ``retry_on`` per ``policy``.

    ``operation`` labels the retries metric (default: ``fn``'s qualified name;
    pass a short stable name for lambdas and partials). Raises
    :class:`RetryExhausted` when the policy runs out, or the original error
    when it is not retryable.
    """
    name = _operation_name(fn, operation)
    counter = metrics.retries_total.labels(name)
    started = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn()
        except retry_on as error:
            elapsed = clock() - started
            delay = next_delay(policy, attempts, elapsed, error, rand)
            if delay is None:
                raise RetryExhausted(name, attempts, elapsed, error) from error
            if on_retry is not None:
                on_retry(attempts, delay, error)
            counter.inc()
            sleep(delay)


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retry_on: ExceptionTypes = (TransientError,),
    operation: str | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Async twin of :func:`retry_call`: awaits ``fn()`` and sleeps without blocking the loop."""
    name = _operation_name(fn, operation)
    counter = metrics.retries_total.labels(name)
    started = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            return await fn()
        except retry_on as error:
            elapsed = clock() - started
            delay = next_delay(policy, attempts, elapsed, error, rand)
            if delay is None:
                raise RetryExhausted(name, attempts, elapsed, error) from error
            if on_retry is not None:
                on_retry(attempts, delay, error)
            counter.inc()
            await sleep(delay)
