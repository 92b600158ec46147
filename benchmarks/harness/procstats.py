"""CPU time and peak memory of a process tree, read from ``/proc`` (Linux).

Why ``/proc`` rather than ``resource.getrusage(RUSAGE_CHILDREN)``: rusage only
counts a child once it has been reaped, so it cannot tell start-up from steady
state. Reading ``utime + stime`` while the system under test runs lets the
harness charge only the CPU spent between the first and the last record. The
tree is walked on every sample (a worker could fork helpers); ``cutime`` and
``cstime`` bring in descendants that have already exited and been reaped.

Peak RSS is ``VmHWM`` (the kernel's high-water mark of resident memory) summed
over the tree; the sampler keeps the largest sum seen, since a process's
``VmHWM`` vanishes with it.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    return text[text.rindex(")") + 2 :].split()


def _parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their living descendants."""
    children = _parent_map()
    tree: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all threads) and of its reaped children."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # stat fields 14-17: utime stime cutime cstime (here shifted by the two skipped fields)
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    """``VmHWM`` of ``pid``: the most resident memory it has had at any moment."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def own_peak_rss_bytes() -> int:
    """The calling process's own peak RSS, for programs that report it on exit: the
    harness may only ever sample a very short-lived program as an exited zombie, whose
    ``/proc/<pid>/status`` has no ``VmHWM`` any more.

    ``VmHWM`` of ``/proc/self``, not ``ru_maxrss``: Linux carries ``ru_maxrss`` across
    ``execve`` from the process that forked, so a peer started by a 670 MB harness
    reported 670 MB (a 2026-12-02 run showed Quix and Faust at exactly the harness's
    size); ``VmHWM`` belongs to the new program's own memory map.
    """
    own = peak_rss_bytes(os.getpid())
    return own or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@dataclass(frozen=True)
class Usage:
    """One sample of a process tree: CPU seconds so far and peak RSS so far."""

    cpu_seconds: float
    peak_rss_bytes: int


class TreeSampler:
    """Samples the trees rooted at some pids; remembers the largest peak RSS seen."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.peak_rss_bytes = 0

    def sample(self) -> Usage:
        tree = process_tree(self.pids)
        cpu = sum(cpu_seconds(pid) for pid in tree)
        rss = sum(peak_rss_bytes(pid) for pid in tree)
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return Usage(cpu, self.peak_rss_bytes)
