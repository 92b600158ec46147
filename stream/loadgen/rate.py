"""How many events a producer may have sent by a given moment (the rate profile).

The producer asks this every ~10 ms tick and sends the difference: a token
bucket whose refill is the integral of the rate profile. Computing the
cumulative allowance (instead of adding tokens tick by tick) keeps the long-run
rate exact however late a tick fires. Pure, so it is unit-tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RateSchedule:
    """``rate`` events/s, optionally with a ``factor``x spike for the last ``spike_s`` of each
    ``period_s`` (``burst=True``). ``rate == 0`` means unlimited."""

    rate: float
    burst: bool = False
    period_s: float = 10.0
    spike_s: float = 2.0
    factor: float = 3.0

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ConfigError("rate", "must be >= 0 (0 = as fast as possible)")
        if not 0 < self.spike_s < self.period_s:
            raise ConfigError("spike_s", "must be between 0 and period_s")
        if self.factor < 1:
            raise ConfigError("factor", "must be >= 1")

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    @property
    def mean_rate(self) -> float:
        """Average events/s over a whole period."""
        if not self.burst:
            return self.rate
        extra = (self.factor - 1) * self.spike_s / self.period_s
        return self.rate * (1 + extra)

    def rate_at(self, elapsed: float) -> float:
        """The instantaneous target rate ``elapsed`` seconds after the start."""
        if self.burst and elapsed % self.period_s >= self.period_s - self.spike_s:
            return self.rate * self.factor
        return self.rate

    def allowed(self, elapsed: float) -> int:
        """Events that may have been sent ``elapsed`` seconds after the start."""
        if not self.burst:
            return int(self.rate * elapsed)
        periods, within = divmod(elapsed, self.period_s)
        base_s = self.period_s - self.spike_s
        per_period = self.rate * (base_s + self.factor * self.spike_s)
        in_period = self.rate * (min(within, base_s) + self.factor * max(0.0, within - base_s))
        return int(periods * per_period + in_period)
