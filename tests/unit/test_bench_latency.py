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


def test_steady_p99_leaves_out_the_first_two_seconds_and_start_shows_the_spike() -> None:
    from benchmarks.harness.latency import start_breakdown, steady_p99

    sent = [1_000 + i for i in range(0, 5_000, 10)]  # 500 events over 5 s
    latencies = [400.0 if s < 1_100 else 20.0 for s in sent]  # the first 100 ms stall
    assert steady_p99(sent, latencies) == 20.0
    start = start_breakdown(sent, latencies)
    assert start[0] == {"t": 0.0, "events": 10, "p50": 400.0, "p99": 400.0, "max": 400.0}
    assert start[1]["p99"] == 20.0 and len(start) == 30
    assert steady_p99([], []) is None and start_breakdown([], []) == []


def test_latency_plot_is_drawn_from_a_results_document(tmp_path: object) -> None:
    import json
    from pathlib import Path

    import pytest

    pytest.importorskip("matplotlib")
    from benchmarks.latency_plot import main

    timeline = [{"t": t, "events": 10, "p50": 5.0, "p99": 9.0, "max": 9.0} for t in range(5)]
    row = {
        "name": "stream",
        "latency_ms": {"p99": 9.0, "steady_p99": 9.0, "offered_rate": 10.0, "timeline": timeline},
    }
    results = Path(str(tmp_path)) / "bench-x.json"
    results.write_text(json.dumps({"rows": [row, {"name": "quix", "latency_ms": None}]}))
    assert main([str(results)]) == 0
    assert (Path(str(tmp_path)) / "bench-x-latency.png").stat().st_size > 1000
