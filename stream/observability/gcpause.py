"""Time every garbage-collector pause of this process (``stream_gc_pause_seconds``).

A full (generation 2) collection walks every tracked object — window state,
Faust's and aiohttp's objects — and stops the hot path while it runs; it is a
classic source of tail latency in Python services, so it is measured rather
than guessed. The callback costs about a microsecond per collection.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from stream.observability import metrics

_started: list[float] = [0.0]
_by_generation = [metrics.gc_pause_seconds.labels(generation=str(g)) for g in range(3)]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _by_generation[info["generation"]].observe(time.perf_counter() - _started[0])


def install() -> None:
    """Start timing collections (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def freeze_startup_objects() -> None:
    """Move everything allocated so far (modules, Faust app, clients) out of the
    collector's reach: later full collections then walk only what the pipeline
    allocates while it runs, which shortens them."""
    gc.collect()
    gc.freeze()
