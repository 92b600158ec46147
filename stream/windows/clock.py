"""Event-time progress of one input partition: its watermark, and the batch view of it.

The watermark of a partition is the largest event time seen on it minus the
allowed lateness; it never goes back. A window closes once the watermark of
its partition reaches ``window end + grace`` (Kafka Streams' rule: a record is
late for a window when ``end + grace <= stream time``).

A partition that stops receiving events would otherwise hold its windows open
forever, so :meth:`PartitionClock.advance_idle` lets the watermark follow the
wall clock once the partition has been idle for ``idle_timeout`` (watermark =
watermark at its last event + wall time elapsed since then). After a restore
the wall time of the last event is unknown — the worker may have been down
while events piled up in Kafka — so the idle clock restarts at the first call.

"Idle" means nothing of the partition is on its way to the stage, not merely
that its last processed batch is old: a worker may hold seconds of fetched
batches between its agents, and a partition whose later batches are still
queued is busy, not idle (closing its windows by the wall clock would make the
queued events late). Whoever knows what is in flight says so with
:meth:`PartitionClock.hold` (the runner, for every partition it fetched records
of that the stage has not seen yet); the idle clock then restarts from the last
hold, i.e. from when the partition's last in-flight batch was processed.

The watermark moves per event, so whether an event is late depends on the
events before it in the same batch. :class:`Batch` answers "watermark at
position i" from a prefix maximum computed (in C, by ``itertools.accumulate``)
only if some event of the batch could be late at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any, Final

#: "No event time yet": below any real epoch-ms value, and safe to add durations to.
NO_TIME: Final = -(2**62)


class PartitionClock:
    """Watermark bookkeeping of one partition (part of its persisted state)."""

    __slots__ = ("idle_base", "last_wall", "max_time", "seq", "watermark")

    def __init__(self) -> None:
        self.max_time = NO_TIME
        self.watermark = NO_TIME
        #: Watermark right after the last event, the base of idle advancement.
        self.idle_base = NO_TIME
        #: Wall-clock ms of the batch that carried the last event (None: unknown).
        self.last_wall: int | None = None
        #: Events processed on this partition so far: the sequence number of the next one.
        self.seq = 0

    def observe(self, batch_max_time: int, count: int, now_ms: int, lateness_ms: int) -> int:
        """Account for a batch; returns the watermark after it."""
        if batch_max_time > self.max_time:
            self.max_time = batch_max_time
        candidate = self.max_time - lateness_ms
        if candidate > self.watermark:
            self.watermark = candidate
        self.idle_base = self.watermark
        self.hold(now_ms)
        self.seq += count
        return self.watermark

    def hold(self, now_ms: int) -> None:
        """Not idle at ``now_ms``: restart the idle clock there (it never goes back).

        ``observe`` gets the wall time its batch was *fetched*; a batch that waited
        in the worker must not wind back a clock a later hold already moved on.
        """
        if self.last_wall is None or now_ms > self.last_wall:
            self.last_wall = now_ms

    def advance_idle(self, now_ms: int, idle_timeout_ms: int) -> bool:
        """Move the watermark with the wall clock if idle long enough. True if it moved."""
        if self.max_time == NO_TIME:
            return False
        if self.last_wall is None:
            self.last_wall = now_ms
            return False
        elapsed = now_ms - self.last_wall
        if elapsed < idle_timeout_ms:
            return False
        candidate = self.idle_base + elapsed
        if candidate <= self.watermark:
            return False
        self.watermark = candidate
        return True

    def dump(self) -> tuple[int, int, int]:
        return (self.max_time, self.watermark, self.seq)

    def load(self, value: Sequence[int]) -> None:
        self.max_time, self.watermark, self.seq = (int(v) for v in value)
        self.idle_base = self.watermark
        self.last_wall = None


class _NoOffsets:
    """Offsets of events fed without them (tests, hand-built batches): all -1."""

    __slots__ = ()

    def __getitem__(self, index: int) -> int:
        return -1


class Batch:
    """One batch of one partition, as the rule stores see it."""

    __slots__ = (
        "_prefix_max",
        "event_id",
        "events",
        "lateness",
        "offsets",
        "seq0",
        "times",
        "wm0",
        "wm_end",
    )

    def __init__(
        self,
        events: Sequence[Any],
        times: Sequence[int],
        *,
        event_id: Callable[[Any], str],
        offsets: Sequence[int] | None = None,
        seq0: int,
        wm0: int,
        wm_end: int,
        lateness: int,
    ) -> None:
        self.events = events
        self.times = times
        #: The id an event is sampled by in correlation records (``sample_event_ids``).
        self.event_id = event_id
        #: Input offset of each event (lineage of correlations); -1 when not given.
        self.offsets = offsets if offsets is not None else _NoOffsets()
        #: Sequence number of ``events[0]`` on its partition (orders samples across batches).
        self.seq0 = seq0
        #: Watermark before the batch / after its last event.
        self.wm0 = wm0
        self.wm_end = wm_end
        self.lateness = lateness
        self._prefix_max: list[int] | None = None

    def wm_at(self, i: int) -> int:
        """The partition's watermark just after ``events[i]``."""
        prefix = self._prefix_max
        if prefix is None:
            prefix = self._prefix_max = list(accumulate(self.times, max))
        wm = prefix[i] - self.lateness
        return wm if wm > self.wm0 else self.wm0
