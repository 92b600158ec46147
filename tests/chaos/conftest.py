"""Chaos-suite plumbing: one summary table of every chaos run, printed at the end.

Each chaos test records a row (events in, enriched, DLQ, duplicates, lost, plus
anything test-specific) through the ``chaos_report`` fixture; the terminal summary
prints them as one table so a CI log shows at a glance what the faults cost.
The event count of the volume tests is ``STREAM_CHAOS_EVENTS`` (see harness.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import pipeline_factory

__all__ = ["pipeline_factory"]  # a fixture, shared with tests/integration

_ROWS: list[dict[str, Any]] = []
_COLUMNS = ("test", "guarantee", "events in", "enriched", "DLQ", "duplicates", "lost", "notes")


@pytest.fixture
def chaos_report() -> Callable[[dict[str, Any]], None]:
    return _ROWS.append


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    columns = list(_COLUMNS) + sorted({k for row in _ROWS for k in row} - set(_COLUMNS))
    cells = [[str(row.get(c, "")) for c in columns] for row in _ROWS]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    terminalreporter.section("chaos summary")
    for i, r in enumerate([columns, *cells]):
        terminalreporter.write_line(" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        if i == 0:
            terminalreporter.write_line("-+-".join("-" * w for w in widths))
