"""Time every garbage-collector pause of this process (``stream_gc_pause_seconds``).

A full (generation 2) collection walks every tracked object — window state,
Faust's and aiohttp's objects — and stops the hot path while it runs; it is a
classic source of tail latency in Python services, so it is measured rather
than guessed. The callback costs about a microsecond per collection.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

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


#: Net allocations of tracked objects between young collections (CPython's default: 700).
#: A batch allocates and frees thousands of lists and dicts within milliseconds; at 700
#: the collector ran ~110 times a second at 40k events/s (1.6-2.7% of the event loop's
#: time, and each pass promotes the batches in flight towards the full collections that
#: stall the chain). At 50,000 almost nothing is collected: what a batch allocates is
#: freed by reference counting first. Cycles still get collected, just less often.
YOUNG_THRESHOLD: Final = 50_000


def freeze_startup_objects() -> None:
    """Move everything allocated so far (modules, Faust app, clients) out of the
    collector's reach: later full collections then walk only what the pipeline
    allocates while it runs, which shortens them. Then collect young objects far less
    often (:data:`YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
