"""One consumed batch on its way through the stage chain.

A :class:`WorkBatch` is what the agents pass along their channels: the records one
``consume`` call returned, and everything the stages have made of them so far —
valid events and their times, the JSON bytes each event is written from, the
enriched values, the records to dead-letter, the extra records user stages emitted.
Nothing is produced while a batch is in the chain; the last agent routes all of its
outputs at once (:mod:`stream.runtime.outputs`) and only then records its offsets,
so a batch dropped in the middle (its partitions revoked, a dependency paused, a
transaction aborted) leaves nothing behind.

Positions: ``records[i]``/``partitions[i]`` are the consumed records; ``events[j]``,
``times[j]``, ``raws[j]`` and ``outputs[j]`` are aligned, and ``indices[j]`` is the
record position of ``events[j]``. Rejects and extra records name a record position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import Message


class Rejected(NamedTuple):
    """A record for the dead-letter topic: which one, why, and how often it was tried."""

    position: int
    stage: str
    error_class: str
    message: str
    attempts: int = 1


class Late(NamedTuple):
    """An event that arrived after its window closed (``late_policy: topic``)."""

    position: int
    rule: str
    window_end: int


class Extra(NamedTuple):
    """A record a user stage emitted to a topic of its own, for the record at ``position``."""

    position: int
    topic: str
    key: bytes | None
    value: bytes


@dataclass(eq=False)
class WorkBatch:
    """The state of one batch between agents (see the module docstring for positions)."""

    epoch: int
    records: list[Message]
    partitions: list[int]
    now_ms: int
    #: Record values, as JSON bytes once a format decoder ran.
    values: list[bytes | None] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    #: The JSON each event is written from: its input bytes, or a user stage's re-encoding.
    raws: list[bytes] = field(default_factory=list)
    #: Enriched record values (empty until the enrich stage ran).
    outputs: list[bytes] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    extra: list[Extra] = field(default_factory=list)
    #: Late events for the late topic (the record is still enriched: it is no failure).
    late: list[Late] = field(default_factory=list)
    #: Partitions revoked (or rewound) while the batch was in flight: dropped everywhere.
    dead: set[int] = field(default_factory=set)
    degraded: int = 0
    dropped: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def keep(self, kept: list[int]) -> None:
        """Keep only the events at positions ``kept`` (ascending) of the aligned lists."""
        if len(kept) == len(self.events):
            return
        self.events = [self.events[j] for j in kept]
        self.times = [self.times[j] for j in kept]
        self.indices = [self.indices[j] for j in kept]
        self.raws = [self.raws[j] for j in kept]
        if self.outputs:
            self.outputs = [self.outputs[j] for j in kept]

    def drop_partitions(self, dead: set[int]) -> None:
        """Forget everything of ``dead`` partitions: no output, no progress for them."""
        self.dead |= dead
        parts = self.partitions
        self.keep([j for j, i in enumerate(self.indices) if parts[i] not in dead])
        self.rejects = [r for r in self.rejects if parts[r.position] not in dead]
        self.extra = [x for x in self.extra if parts[x.position] not in dead]
        if self.late:
            self.late = [x for x in self.late if parts[x.position] not in dead]

    def live_positions(self) -> list[int]:
        """Record positions of partitions still owned (all of them, normally)."""
        if not self.dead:
            return list(range(len(self.records)))
        dead, parts = self.dead, self.partitions
        return [i for i, p in enumerate(parts) if p not in dead]
