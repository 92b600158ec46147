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


def test_freeze_moves_startup_objects_out_of_reach_and_collects_young_less_often() -> None:
    thresholds = gc.get_threshold()
    try:
        gcpause.freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gcpause.YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_batch_worth_of_short_lived_objects_triggers_no_collection() -> None:
    """What one batch allocates and frees never reaches the young threshold."""
    gcpause.install()
    thresholds = gc.get_threshold()
    try:
        gc.set_threshold(gcpause.YOUNG_THRESHOLD, *thresholds[1:])
        gc.collect()
        before = _count(0) + _count(1) + _count(2)
        for _ in range(20):  # 20 batches of 10,000 events, each a dict in a list
            batch = [{"event": i, "fields": [i]} for i in range(10_000)]
            del batch
        assert _count(0) + _count(1) + _count(2) == before
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(gcpause._on_gc)
