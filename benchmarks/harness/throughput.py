"""A throughput row: start a system on the pre-produced input, watch it to the end.

The clock runs from the first sample that shows progress to the sample that
shows all ``expect`` records handled; events/s is the records handled between
those two samples over the time between them, so start-up (imports, group
join) is excluded and the polling interval costs at most one interval of
precision. CPU seconds per million events come from the same two samples of
the process tree's ``utime + stime``. Peers and the ceiling time themselves
(first input record to last output) and print it; their own figure is used.

Correctness is then checked from the broker alone (``cluster``): every input
record must be either enriched or dead-lettered, exactly as the generator's
ground truth says.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from benchmarks.harness.console import Console
from benchmarks.harness.procstats import TreeSampler
from benchmarks.harness.rows import FAILED, TIMEOUT, Row
from benchmarks.harness.systems import ProgramSystem, System

#: Seconds between samples: fine enough for ~1 s runs, cheap for the worker's /metrics.
INTERVAL_S = 0.1
#: A system that shows no progress for this long is hung: killed, row TIMEOUT.
STALL_S = 180.0


class RowError(Exception):
    """The row cannot produce a result; ``status`` is FAILED or TIMEOUT."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Point:
    at: float
    done: int
    cpu_seconds: float


@dataclass(frozen=True)
class Watch:
    """What watching a system to completion saw."""

    started: float
    first: Point
    last: Point
    peak_rss_bytes: int
    #: The last point whose CPU was read while the system still ran (a system that
    #: exits right after its last flush has no CPU reading at ``last``).
    last_cpu: Point | None = None

    @property
    def events_per_s(self) -> float:
        done = self.last.done - self.first.done
        seconds = self.last.at - self.first.at
        if done <= 0 or seconds <= 0:  # all of it between two samples
            return self.last.done / max(self.last.at - self.started, 1e-9)
        return done / seconds

    @property
    def cpu_seconds_per_million(self) -> float:
        end = self.last_cpu or self.last
        done = end.done - self.first.done
        if done <= 0 or end.cpu_seconds <= self.first.cpu_seconds:
            # No CPU reading between the first record and the end: charge the whole
            # run (start-up included) to every record rather than report zero.
            return end.cpu_seconds / max(self.last.done, 1) * 1e6
        return (end.cpu_seconds - self.first.cpu_seconds) / done * 1e6


def peak_rss_bytes(seen: Watch, facts: Mapping[str, Any]) -> int:
    """The larger of the sampler's peak and the one the program reported about itself:
    a program that finishes between two samples may only have been sampled as an
    exited (zombie) process, which has no resident memory (a CI smoke run reported
    the ceiling row at 0 MB)."""
    return max(seen.peak_rss_bytes, int(facts.get("peak_rss_bytes") or 0))


def watch(
    system: System,
    expect: int,
    deadline: float,
    console: Console,
    label: str,
    interval: float = INTERVAL_S,
    stall: float = STALL_S,
) -> Watch:
    """Sample ``system`` until it has handled ``expect`` records; raises ``RowError``
    past ``deadline`` or after ``stall`` seconds without progress."""
    sampler = TreeSampler(system.pids)
    started = last_change = time.monotonic()
    first: Point | None = None
    last_cpu: Point | None = None
    cpu = 0.0
    previous = -1
    while True:
        now = time.monotonic()
        if now > deadline:
            raise RowError(TIMEOUT, f"{previous:,} of {expect:,} records by the row timeout")
        if reason := system.crashed():
            raise RowError(FAILED, reason)
        # Liveness first: a system that exits right after its last flush must have
        # those last records counted, not be reported as having stopped short.
        alive = any(c.running() for c in system.children)
        done = system.progress()
        if done != previous:
            previous, last_change = done, now
        elif now - last_change > stall:
            raise RowError(TIMEOUT, f"no progress for {stall:g}s at {done:,} of {expect:,}")
        if alive:
            cpu = max(cpu, sampler.sample().cpu_seconds)
        point = Point(now, done, cpu)
        if alive:
            last_cpu = point
        if first is None and done > 0:
            first = point
        if done >= expect:
            return Watch(started, first or point, point, sampler.peak_rss_bytes, last_cpu)
        if not alive:
            raise RowError(FAILED, f"exited after {done:,} of {expect:,} records")
        console.progress(label, done, expect, now - started)
        time.sleep(interval)


def run_throughput(
    row: Row,
    system: System,
    deadline: float,
    console: Console,
    check: Callable[[Row], None],
) -> None:
    """Measure ``system`` into ``row``; on any failure mark the row and stop the system."""
    expect = row.events
    try:
        try:
            seen = watch(system, expect, deadline, console, row.name)
            facts = system.finish(min(max(deadline - time.monotonic(), 1.0), STALL_S))
        except TimeoutError as exc:
            raise RowError(TIMEOUT, str(exc)) from None
        except RuntimeError as exc:
            raise RowError(FAILED, str(exc)) from None
    except RowError as exc:
        system.kill()
        row.fail(exc.status, str(exc))
        return
    finally:
        system.stop()
    row.peak_rss_mb = peak_rss_bytes(seen, facts) / 2**20
    row.cpu_seconds_per_million = seen.cpu_seconds_per_million
    if isinstance(system, ProgramSystem) and facts.get("events_per_s"):
        row.events_per_s = float(facts["events_per_s"])
        row.seconds = float(facts["seconds"])
        row.detail["reported_by"] = "program (first input record to last output)"
    else:
        row.events_per_s = seen.events_per_s
        row.seconds = expect / row.events_per_s if row.events_per_s else None
        row.detail["reported_by"] = "harness (stream_events_consumed_total samples)"
    skip = ("events_per_s", "seconds", "peak_rss_bytes")
    row.detail.update({k: v for k, v in facts.items() if k not in skip})
    check(row)
