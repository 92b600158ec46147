"""CPU per million records and peak RSS from the throughput watcher's samples."""

from __future__ import annotations

import pytest

from benchmarks.harness.throughput import Point, Watch, peak_rss_bytes


def test_cpu_between_first_record_and_last_reading() -> None:
    watch = Watch(0.0, Point(1.0, 1_000, 2.0), Point(3.0, 21_000, 4.0), 0, Point(3.0, 21_000, 4.0))
    assert watch.cpu_seconds_per_million == pytest.approx(100.0)  # 2 s for 20,000 records


def test_system_that_exited_before_a_cpu_reading_is_not_reported_as_free() -> None:
    # first record seen at the only CPU reading; the process exited before the next one
    first = Point(1.0, 5_000, 1.5)
    watch = Watch(0.0, first, Point(1.2, 20_000, 1.5), 0, first)
    assert watch.cpu_seconds_per_million == pytest.approx(1.5 / 20_000 * 1e6)


def test_peak_rss_of_a_program_sampled_only_as_a_zombie_comes_from_its_own_report() -> None:
    # CI: the ceiling finished between two samples; /proc had no VmHWM for it any more
    seen = Watch(0.0, Point(1.0, 1, 0.5), Point(1.1, 20_000, 0.5), 0)
    assert peak_rss_bytes(seen, {"peak_rss_bytes": 300 * 2**20}) == 300 * 2**20
    assert peak_rss_bytes(seen, {}) == 0  # neither: stays 0, which the bench smoke test rejects


def test_the_sampled_tree_peak_wins_when_larger() -> None:
    # a worker's tree (e.g. with helper processes) outweighs one process's own figure
    seen = Watch(0.0, Point(1.0, 1, 0.5), Point(2.0, 20_000, 1.5), 500 * 2**20)
    assert peak_rss_bytes(seen, {"peak_rss_bytes": 300 * 2**20}) == 500 * 2**20


def test_a_program_reports_its_own_peak_rss_not_that_of_the_harness_that_started_it() -> None:
    # Linux carries ru_maxrss across execve: a peer started by a 670 MB harness said 670 MB
    import subprocess
    import sys
    from pathlib import Path

    ballast = bytearray(200 * 2**20)
    ballast[::4096] = b"\1" * len(range(0, len(ballast), 4096))  # resident, not just mapped
    code = (
        "from benchmarks.harness.procstats import own_peak_rss_bytes as h\n"
        "from benchmarks.peers.common import own_peak_rss_bytes as p\n"
        "print(h(), p())"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True
    ).stdout.split()
    assert len(ballast) == 200 * 2**20
    assert all(0 < int(v) < 150 * 2**20 for v in out), out
