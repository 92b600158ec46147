"""``stream bench``: our worker against the ceiling and the Python peers, on one broker.

Modules, lowest first: ``procstats`` (CPU and RSS from /proc), ``cluster`` (topics,
offsets, reading back), ``load`` (input from the load generator), ``systems`` (the
processes under test), ``ceiling`` (the no-processing copy program), ``throughput``
and ``latency`` (the two measurements), ``verify`` (outputs against ground truth),
``rows`` and ``report`` (results, JSON, table), ``orchestrate`` (the run).
"""

from benchmarks.harness.console import Console
from benchmarks.harness.orchestrate import (
    DEFAULT_RESULTS_DIR,
    BenchOptions,
    BenchResult,
    run_bench,
    select_rows,
    select_workloads,
)
from benchmarks.harness.report import render_notes, render_table
from benchmarks.harness.rows import LATENCY_ROWS, ROW_NAMES, Row

__all__ = [
    "DEFAULT_RESULTS_DIR",
    "LATENCY_ROWS",
    "ROW_NAMES",
    "BenchOptions",
    "BenchResult",
    "Console",
    "Row",
    "render_notes",
    "render_table",
    "run_bench",
    "select_rows",
    "select_workloads",
]
