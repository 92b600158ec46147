"""The enrich stage behind a circuit breaker, with a lookup that fails 100 % and then recovers.

While the lookup fails the stage keeps answering — every event it cannot look up
passes through marked ``degraded`` — and once the breaker is open it stops
calling the dependency at all. After the recovery timeout one probe goes
through; when it succeeds the breaker closes and events are enriched again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

import tests.support.observability as obs
from stream.errors import TransientError
from stream.pipelines.observability import EnrichedEvent, Event, ServiceInfo
from stream.resilience.circuit_breaker import BreakerState, CircuitBreaker

T0 = 1_700_000_000_000


class FlakyLookup:
    """Fails every call while ``down``; counts the calls that reached it."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.services = {f"svc-{i}": ServiceInfo(team=f"team-{i}", tier=1) for i in range(100)}

    @property
    def version(self) -> int:
        return 1

    def lookup(self, sources: Collection[str]) -> Mapping[str, ServiceInfo]:
        self.calls += 1
        if self.down:
            raise TransientError("reference service unavailable")
        return {s: self.services[s] for s in sources if s in self.services}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(*sources: str) -> tuple[list[Event], list[int], list[bytes]]:
    events = [Event(f"e-{s}", "t", s, T0, "error") for s in sources]
    return events, [T0] * len(events), [msgspec.json.encode(e) for e in events]


def decoded(values: list[bytes]) -> list[EnrichedEvent]:
    return [msgspec.json.decode(v, type=EnrichedEvent) for v in values]


def test_outage_degrades_then_breaker_opens_then_recovery_closes_it() -> None:
    lookup = FlakyLookup()
    clock = Clock()
    breaker = CircuitBreaker(
        "reference-test", failure_threshold=3, recovery_timeout=10.0, clock=clock
    )
    enricher = obs.enricher(lookup, breaker)

    healthy = enricher.enrich(*batch("svc-0", "svc-1"))
    assert healthy.degraded == 0
    assert [e.enrichment.team for e in decoded(healthy.values)] == ["team-0", "team-1"]

    lookup.down = True
    for i, source in enumerate(("svc-10", "svc-11", "svc-12")):  # uncached: must look up
        result = enricher.enrich(*batch(source))
        assert result.degraded == 1
        [event] = decoded(result.values)
        assert event.enrichment.degraded and not event.enrichment.known_service
        assert event.event_id == f"e-{source}"  # the event itself passes through intact
        assert breaker.state is (BreakerState.OPEN if i == 2 else BreakerState.CLOSED)
    calls_when_opened = lookup.calls

    open_result = enricher.enrich(*batch("svc-13", "svc-14"))
    assert open_result.degraded == 2
    assert lookup.calls == calls_when_opened  # open: the dependency is not called at all
    cached = enricher.enrich(*batch("svc-0"))
    assert cached.degraded == 0  # already-cached sources keep their enrichment

    clock.now += 10.0
    lookup.down = False
    assert breaker.state is BreakerState.HALF_OPEN
    recovered = enricher.enrich(*batch("svc-13", "svc-14"))
    assert recovered.degraded == 0
    assert [e.enrichment.team for e in decoded(recovered.values)] == ["team-13", "team-14"]
    assert breaker.state is BreakerState.CLOSED
    assert lookup.calls == calls_when_opened + 1  # exactly one probe


def test_a_failed_probe_reopens_the_breaker() -> None:
    lookup = FlakyLookup()
    clock = Clock()
    breaker = CircuitBreaker(
        "reference-probe", failure_threshold=1, recovery_timeout=5.0, clock=clock
    )
    enricher = obs.enricher(lookup, breaker)
    lookup.down = True
    assert enricher.enrich(*batch("svc-1")).degraded == 1
    assert breaker.state is BreakerState.OPEN
    clock.now += 5.0
    assert enricher.enrich(*batch("svc-2")).degraded == 1  # the probe, still failing
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == 5.0
