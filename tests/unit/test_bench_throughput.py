"""CPU per million records from the throughput watcher's samples."""

from __future__ import annotations

import pytest

from benchmarks.harness.throughput import Point, Watch


def test_cpu_between_first_record_and_last_reading() -> None:
    watch = Watch(0.0, Point(1.0, 1_000, 2.0), Point(3.0, 21_000, 4.0), 0, Point(3.0, 21_000, 4.0))
    assert watch.cpu_seconds_per_million == pytest.approx(100.0)  # 2 s for 20,000 records


def test_system_that_exited_before_a_cpu_reading_is_not_reported_as_free() -> None:
    # first record seen at the only CPU reading; the process exited before the next one
    first = Point(1.0, 5_000, 1.5)
    watch = Watch(0.0, first, Point(1.2, 20_000, 1.5), 0, first)
    assert watch.cpu_seconds_per_million == pytest.approx(1.5 / 20_000 * 1e6)
