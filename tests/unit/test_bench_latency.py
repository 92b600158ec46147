"""The benchmark's latency arithmetic: nearest-rank percentiles and the per-second timeline."""

from __future__ import annotations

from benchmarks.harness.latency import per_second, percentile
from benchmarks.harness.rows import Latency


def test_nearest_rank_percentile() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert percentile(ordered, 50) == 50.0
    assert percentile(ordered, 99) == 99.0
    assert percentile(ordered, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_timeline_buckets_by_produce_second_and_finds_the_stall() -> None:
    # Second 0: 100 events at 10 ms; second 1: one stalled event (500 ms) among 99 at 20 ms.
    sent = [10_000 + i * 10 for i in range(100)] + [11_000 + i * 10 for i in range(100)]
    latencies = [10.0] * 100 + [500.0] + [20.0] * 99
    timeline = per_second(sent, latencies)
    assert timeline == [
        {"t": 0, "events": 100, "p50": 10.0, "p99": 10.0, "max": 10.0},
        {"t": 1, "events": 100, "p50": 20.0, "p99": 20.0, "max": 500.0},
    ]
    latency = Latency(1.0, 1.0, 200, 200, 200, 10.0, 20.0, 20.0, 500.0, timeline=timeline)
    assert latency.worst_second == timeline[1]
    assert latency.as_dict()["timeline"] == timeline


def test_empty_timeline() -> None:
    assert per_second([], []) == []
