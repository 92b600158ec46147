"""Circuit breaker: stop calling a dependency that keeps failing, probe it later.

Why: when an external lookup (enrichment reference service, a sink's database)
is down, calling it for every batch adds its timeout to every batch and piles
load onto something that is trying to recover. An open breaker fails fast with
``CircuitOpenError`` so the caller can degrade (enrich without reference data)
or back off (a sink), and after ``recovery_timeout`` lets a few probe calls
through to find out whether the dependency is back.

States and transitions::

    closed ──(trip condition)──▶ open ──(recovery_timeout elapsed)──▶ half-open
      ▲                            ▲                                     │
      │                            └──────────(a probe fails)────────────┤
      └─────────────(half_open_max_calls probes succeed)─────────────────┘

Trip conditions, either of which opens the breaker when closed:

* ``failure_threshold`` consecutive failures (``None`` disables), or
* an error rate of at least ``error_rate_threshold`` over the last
  ``window_size`` outcomes, once at least ``minimum_calls`` outcomes are in the
  window (``None`` disables). The minimum volume keeps one failure out of two
  calls at start-up from tripping a 50 % threshold.

Only errors in ``failure_on`` count as failures; any other error escaping the
call means the dependency answered (e.g. "not found") and counts as a success.

State is exported as ``stream_circuit_breaker_state{breaker}`` (0 closed,
1 half-open, 2 open), every transition increments
``stream_circuit_breaker_transitions_total{breaker,to_state}`` and is logged once
on the ``stream.resilience`` logger. The open → half-open transition happens
lazily, on the first :meth:`CircuitBreaker.allow` (or ``state`` read) after the
timeout, so a breaker nobody asks stays "open" on dashboards.

A lock guards the state, which is enough for one event loop plus one worker
thread sharing a breaker. Results that arrive while the breaker is open (calls
started before it opened) are ignored.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from stream.errors import CircuitOpenError, ConfigError
from stream.observability import metrics

T = TypeVar("T")

logger: Final = logging.getLogger("stream.resilience")


class BreakerState(enum.IntEnum):
    """Breaker states; the values are those of the state gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class CircuitBreaker:
    """A named circuit breaker; see the module docstring for the state machine."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None = 5,
        error_rate_threshold: float | None = None,
        window_size: int = 20,
        minimum_calls: int = 10,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        failure_on: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold is None and error_rate_threshold is None:
            raise ConfigError(
                f"breaker.{name}", "set failure_threshold, error_rate_threshold or both"
            )
        if failure_threshold is not None and failure_threshold < 1:
            raise ConfigError(f"breaker.{name}.failure_threshold", "must be >= 1")
        if error_rate_threshold is not None and not 0 < error_rate_threshold <= 1:
            raise ConfigError(f"breaker.{name}.error_rate_threshold", "must be in (0, 1]")
        if window_size < 1:
            raise ConfigError(f"breaker.{name}.window_size", "must be >= 1")
        if not 1 <= minimum_calls <= window_size:
            raise ConfigError(f"breaker.{name}.minimum_calls", "must be in [1, window_size]")
        if recovery_timeout < 0:
            raise ConfigError(f"breaker.{name}.recovery_timeout", "must be >= 0")
        if half_open_max_calls < 1:
            raise ConfigError(f"breaker.{name}.half_open_max_calls", "must be >= 1")

        self.name = name
        self.failure_threshold = failure_threshold
        self.error_rate_threshold = error_rate_threshold
        self.minimum_calls = minimum_calls
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self.failure_on = failure_on
        self._clock = clock
        self._lock = threading.Lock()

        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._window: deque[bool] = deque(maxlen=window_size)  # True = failure
        self._window_failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

        self._state_gauge = metrics.circuit_breaker_state.labels(name)
        self._state_gauge.set(BreakerState.CLOSED)

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """Current state (moves open → half-open if the recovery timeout has passed)."""
        with self._lock:
            self._maybe_half_open()
            return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        with self._lock:
            self._maybe_half_open()
            return self._retry_after()

    def _retry_after(self) -> float:
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.recovery_timeout - self._clock())

    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self.recovery_timeout
        ):
            self._transition(BreakerState.HALF_OPEN, "recovery timeout elapsed; probing")

    def _transition(self, to: BreakerState, reason: str) -> None:
        previous = self._state
        self._state = to
        self._consecutive_failures = 0
        self._window.clear()
        self._window_failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()
        self._state_gauge.set(to)
        metrics.circuit_breaker_transitions_total.labels(self.name, to.label).inc()
        level = logging.WARNING if to is BreakerState.OPEN else logging.INFO
        logger.log(
            level,
            "circuit breaker %r: %s -> %s (%s)",
            self.name,
            previous.label,
            to.label,
            reason,
        )

    # -- manual protocol ---------------------------------------------------

    def allow(self) -> bool:
        """May a call go ahead now? In half-open, a True reserves one probe slot.

        A caller that gets True must report the outcome with
        :meth:`record_success` or :meth:`record_failure`.
        """
        with self._lock:
            self._maybe_half_open()
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN:
                return False
            if self._probes_in_flight + self._probe_successes >= self.half_open_max_calls:
                return False
            self._probes_in_flight += 1
            return True

    def record_success(self) -> None:
        """Report that an allowed call succeeded."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._consecutive_failures = 0
                self._push_outcome(failed=False)
            elif self._state is BreakerState.HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_max_calls:
                    self._transition(
                        BreakerState.CLOSED, f"{self._probe_successes} probe(s) succeeded"
                    )

    def record_failure(self, error: BaseException | None = None) -> None:
        """Report that an allowed call failed (``error`` is only used in the log line)."""
        with self._lock:
            what = "" if error is None else f"; last error {type(error).__name__}: {error}"
            if self._state is BreakerState.CLOSED:
                self._consecutive_failures += 1
                self._push_outcome(failed=True)
                reason = self._trip_reason()
                if reason is not None:
                    self._transition(BreakerState.OPEN, reason + what)
            elif self._state is BreakerState.HALF_OPEN:
                self._transition(BreakerState.OPEN, "probe failed" + what)

    def _release(self) -> None:
        """Give back a half-open probe slot when the call ended with no outcome."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def _push_outcome(self, *, failed: bool) -> None:
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._window_failures -= 1
        window.append(failed)
        if failed:
            self._window_failures += 1

    def _trip_reason(self) -> str | None:
        threshold = self.failure_threshold
        if threshold is not None and self._consecutive_failures >= threshold:
            return f"{self._consecutive_failures} consecutive failures"
        rate_threshold = self.error_rate_threshold
        calls = len(self._window)
        if rate_threshold is not None and calls >= self.minimum_calls:
            rate = self._window_failures / calls
            if rate >= rate_threshold:
                return f"error rate {rate:.0%} over the last {calls} calls"
        return None

    # -- wrapped calls -----------------------------------------------------

    def _refuse(self) -> CircuitOpenError:
        with self._lock:
            return CircuitOpenError(self.name, self._retry_after())

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn()`` through the breaker; when open, raise ``CircuitOpenError`` instead."""
        if not self.allow():
            raise self._refuse()
        try:
            result = fn()
        except self.failure_on as error:
            self.record_failure(error)
            raise
        except Exception:
            self.record_success()  # the dependency answered; the error is the caller's
            raise
        except BaseException:
            self._release()  # cancelled or interrupted: no outcome
            raise
        self.record_success()
        return result

    async def call_async(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Async twin of :meth:`call`."""
        if not self.allow():
            raise self._refuse()
        try:
            result = await fn()
        except self.failure_on as error:
            self.record_failure(error)
            raise
        except Exception:
            self.record_success()
            raise
        except BaseException:
            self._release()
            raise
        self.record_success()
        return result
