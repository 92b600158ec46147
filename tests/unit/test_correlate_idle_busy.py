"""Idle partitions vs partitions whose batches are still queued inside the worker.

The worker holds fetched batches between its agents; under load (a slow user stage, a
backlog) a partition's next batches can wait there longer than ``idle_timeout_ms``.
Such a partition is busy, not idle: the runner names it in ``busy`` on every tick,
which restarts its idle clock, and calls ``hold_idle`` when its last in-flight batch is
through. Before this, the idle clock ran from the *fetch* time of the last batch the
stage had seen, so the tick advanced the watermark with the wall clock, closed the
window, and the queued events arrived late (found by the soak run at 5 s).
"""

from __future__ import annotations

from typing import Any

import tests.support.observability as obs
from stream.models import Correlation
from stream.pipelines.observability import Event
from stream.stages.correlate import Correlator
from stream.windows.spec import parse_rules

T0 = 1_700_000_000_000  # a multiple of 10 s
IDLE = 5_000
#: 10 s tumbling windows without grace: closes at T0 + 10 s of watermark.
RULES = parse_rules(
    [
        {
            "name": "count",
            "kind": "threshold",
            "when": ">= 1",
            "aggregate": "count",
            "window": {"type": "tumbling", "size": "10s"},
        }
    ]
)


def ev(i: int, t: int) -> Event:
    base: dict[str, Any] = {"type": "request"}
    return Event(event_id=f"e{i}", source="api", timestamp=t, severity="error", **base)


def batch(
    engine: Correlator, first: int, n: int, fetched_ms: int
) -> tuple[list[Correlation], list[int]]:
    """Process ``n`` events at T0 + first.. on partition 0, fetched at wall ``fetched_ms``."""
    events = [ev(first + k, T0 + first + k) for k in range(n)]
    result = engine.process(0, events, [e.event_time_ms() for e in events], fetched_ms)
    return result.correlations, result.late_indices


def test_queued_batches_keep_a_partition_busy_and_nothing_arrives_late() -> None:
    engine = obs.correlator(RULES, idle_timeout_ms=IDLE)
    assert batch(engine, 0, 5, fetched_ms=0) == ([], [])
    # Batch B (same window) was fetched at 1 s and waits behind a slow stage for 20 s;
    # the ticks meanwhile see partition 0 busy.
    for now in range(1_000, 21_000, 1_000):
        assert engine.advance_idle(now, busy={0}) == [], f"closed at tick {now}"
    closed, late = batch(engine, 5, 5, fetched_ms=1_000)  # correlated at 21 s
    assert (closed, late) == ([], [])
    engine.hold_idle([0], 21_000)  # its outputs are routed: the last in-flight batch is through
    # idle from 21 s + 5 s: watermark = T0 + 9 (after B) + wall time since 21 s
    assert engine.advance_idle(25_999) == []
    assert engine.advance_idle(30_990) == []
    (window,) = engine.advance_idle(30_991)
    assert (window.window_start, window.count, window.final) == (T0, 10, True)


def test_without_the_busy_set_the_window_closes_under_the_queued_batch() -> None:
    """What the worker did before (and what ``busy`` prevents): 5 late events of 10."""
    engine = obs.correlator(RULES, idle_timeout_ms=IDLE)
    batch(engine, 0, 5, fetched_ms=0)
    closed = [c for now in range(1_000, 21_000, 1_000) for c in engine.advance_idle(now)]
    assert [(c.window_start, c.count) for c in closed] == [(T0, 5)]
    _, late = batch(engine, 5, 5, fetched_ms=1_000)
    assert late == [0, 1, 2, 3, 4]


def test_a_batch_fetched_before_a_hold_does_not_wind_the_idle_clock_back() -> None:
    engine = obs.correlator(RULES, idle_timeout_ms=IDLE)
    batch(engine, 0, 5, fetched_ms=0)
    assert engine.advance_idle(20_000, busy={0}) == []
    batch(engine, 5, 1, fetched_ms=1_000)  # fetched at 1 s, correlated after the 20 s tick
    assert engine.advance_idle(24_999) == []  # idle since 20 s, not since 1 s
    assert engine.advance_idle(29_994) == []  # watermark T0 + 5 + 9_994 < T0 + 10 s
    assert [c.count for c in engine.advance_idle(29_995)] == [6]


def test_busy_names_only_the_partitions_it_holds() -> None:
    engine = obs.correlator(RULES, idle_timeout_ms=IDLE)
    for p in (0, 1):
        events = [ev(p, T0)]
        engine.process(p, events, [T0], 0)
    closed = engine.advance_idle_by_partition(10_000, busy={1})
    assert list(closed) == [0]  # partition 0 idle: 10 s since its batch; 1 held
    assert engine.advance_idle_by_partition(14_999) == {}
    assert list(engine.advance_idle_by_partition(20_000)) == [1]


def test_hold_of_an_unknown_partition_creates_no_state() -> None:
    engine = obs.correlator(RULES, idle_timeout_ms=IDLE)
    engine.hold_idle([3], 1_000)
    assert engine.advance_idle(100_000, busy={3}) == []
    assert engine.stats() == {"count": 0, "bytes": 0}
