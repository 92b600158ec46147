"""Flow control: when to stop fetching, and when to fetch again.

Two reasons pause the input partitions (:mod:`stream.kafka.pausing`):

* **backpressure** — the producer's queue is above half its capacity: fetching more
  would only buffer more in memory. Fetching resumes below a tenth.
* **a dependency** — a lookup with ``on_failure: pause``, an async user stage's
  service or the schema registry is unavailable. The batch that found it down is
  sought back to its first records (and every batch fetched after it is dropped, by
  the epoch bump), the input pauses, and resumes after a backoff once no guarding
  circuit breaker is open; the next batch is the probe.

Batches in flight (fetched, not yet through the chain) are bounded by
``max_inflight_batches``: the fetch loop takes a slot per batch and the chain gives it
back when the batch is finished or dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

from stream.kafka.pausing import BACKPRESSURE, LOOKUP, PartitionPauser
from stream.observability import metrics
from stream.resilience.circuit_breaker import BreakerState, CircuitBreaker
from stream.resilience.retry import RetryPolicy
from stream.runtime.ownership import Ownership

log = logging.getLogger(__name__)

#: Backoff before fetching again after a dependency was found down.
DEPENDENCY_RETRY = RetryPolicy(
    initial=0.5, multiplier=2.0, max_delay=10.0, max_attempts=1_000_000, total_timeout=None
)


class FlowControl:
    """Pauses and resumes the owned input partitions."""

    def __init__(
        self,
        pauser: PartitionPauser,
        ownership: Ownership,
        queue_limit: int,
        breakers: Sequence[CircuitBreaker],
        wall: Callable[[], float],
    ) -> None:
        self._pauser = pauser
        self._ownership = ownership
        self.high_water, self.low_water = queue_limit // 2, queue_limit // 10
        self.breakers = list(breakers)
        self._wall = wall
        self._failures = 0
        self._retry_at = 0.0

    @property
    def paused(self) -> bool:
        return self._pauser.paused

    def before_fetch(self, queued: int) -> None:
        """Apply backpressure from the producer queue; resume after a dependency came back."""
        owned = self._ownership.assigned.keys()
        pauser = self._pauser
        if queued >= self.high_water:
            pauser.hold(BACKPRESSURE, owned, f"({queued} records queued for the broker)")
        elif queued <= self.low_water and BACKPRESSURE in pauser.reasons:
            pauser.release(BACKPRESSURE, owned, f"({queued} records queued)")
        if (
            LOOKUP in pauser.reasons
            and self._wall() >= self._retry_at
            and all(b.state is not BreakerState.OPEN for b in self.breakers)
        ):
            # The next batch is the probe; if the dependency is still down, we pause again.
            pauser.release(LOOKUP, owned, "(dependency breakers let a probe through)")

    def dependency_down(self, firsts: dict[int, int], stage: str, why: str) -> None:
        """Re-fetch from ``firsts`` (partition -> first offset of the batch) after a pause."""
        self._failures += 1
        self._retry_at = self._wall() + DEPENDENCY_RETRY.backoff_cap(self._failures)
        self._ownership.seek_back(firsts)
        owned: Collection[int] = self._ownership.assigned.keys()
        self._pauser.hold(LOOKUP, owned, f"({why})")
        metrics.errors_total.labels(stage=stage, error_class="lookup_unavailable").inc()

    def dependency_ok(self) -> None:
        self._failures = 0
