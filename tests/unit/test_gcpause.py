"""GC pause timing: every collection is observed once, under its generation."""

from __future__ import annotations

import gc

from stream.observability import gcpause, metrics


def _count(generation: int) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "stream_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


def test_each_collection_is_timed_once_under_its_generation() -> None:
    gcpause.install()
    gcpause.install()  # idempotent: still one callback
    try:
        assert gc.callbacks.count(gcpause._on_gc) == 1
        before = [_count(g) for g in range(3)]
        gc.collect(2)
        gc.collect(1)
        after = [_count(g) for g in range(3)]
        assert after[2] - before[2] == 1
        assert after[1] - before[1] == 1
    finally:
        gc.callbacks.remove(gcpause._on_gc)


def test_freeze_moves_startup_objects_out_of_reach() -> None:
    try:
        gcpause.freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
