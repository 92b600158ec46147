"""What a user-written stage receives: :class:`StageBatch`.

A pipeline file names stages of your own::

    stages:
      - python: mypkg.fraud:score     # module:function, imported at start-up
        after: enrich                 # validate | enrich (correlate always comes last)
        topics: [fraud.scores]        # topics it may emit() to
        timeout: 2s                   # async stages: per call, then retries, then on_failure
        retries: 2
        on_failure: pause             # pause (wait for the service) | dlq

The function takes one :class:`StageBatch` and returns nothing; ``def`` and
``async def`` both work. It sees the batch's events as the schema decoded them
(msgspec Structs, attribute access: ``event.amount``), the JSON each one will be
written from, and each one's input position, and it may:

* change an event — ``batch.update(i, field=value)`` sets top-level fields and
  re-encodes that event's output (unchanged events keep their bytes as they are);
* ``batch.drop(i)`` — the event is not written and not correlated;
* ``batch.reject(i, reason, message)`` — the record goes to the dead-letter topic
  with ``dlq.error.class = reason`` and ``dlq.stage`` = the stage's name;
* ``batch.emit(topic, value, key=None)`` — an extra record to one of its declared
  topics, written with the batch's outputs and covered by the same checkpoint.

A stage that raises is retried one record at a time; the records it still raises on
go to the dead-letter topic as ``unprocessable``. Nothing here touches Kafka.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

import orjson


class Position(NamedTuple):
    """Where an event came from."""

    topic: str
    partition: int
    offset: int


class StageBatch:
    """A batch of events for one user stage (see the module docstring)."""

    def __init__(
        self,
        events: list[Any],
        raws: list[bytes],
        positions: Sequence[Position],
        topics: Collection[str] = (),
    ) -> None:
        #: The events as the schema decoded them; ``events[i]`` is the i-th event.
        self.events = events
        #: The JSON each event will be written from (its input, or its enriched value).
        self.raws = raws
        #: Input topic, partition and offset of each event.
        self.positions = positions
        self._topics = frozenset(topics)
        self.dropped: set[int] = set()
        self.rejected: dict[int, tuple[str, str]] = {}
        self.updated: dict[int, dict[str, Any]] = {}
        self.emitted: list[tuple[int, str, bytes | None, bytes]] = []

    def __len__(self) -> int:
        return len(self.events)

    def update(self, i: int, **fields: Any) -> None:
        """Set top-level fields of event ``i``; its output is re-encoded with them."""
        event = self.events[i]
        for name, value in fields.items():
            if hasattr(event, name):
                setattr(event, name, value)
        self.updated.setdefault(i, {}).update(fields)

    def drop(self, i: int) -> None:
        """Event ``i`` is neither written nor correlated."""
        self.dropped.add(i)

    def reject(self, i: int, reason: str, message: str = "") -> None:
        """Send event ``i``'s record to the dead-letter topic with ``reason`` as its class."""
        if not reason or any(c.isspace() for c in reason):
            raise ValueError(f"reason must be one word, e.g. suspected_fraud; got {reason!r}")
        self.rejected[i] = (reason, message)

    def emit(
        self,
        topic: str,
        value: bytes | dict[str, Any],
        key: bytes | str | None = None,
        *,
        of: int = 0,
    ) -> None:
        """Write an extra record to ``topic`` (declared in the stage's ``topics``).

        ``of``: the event it belongs to (its input position goes into the lineage
        header; default: the batch's first event).
        """
        if topic not in self._topics:
            declared = ", ".join(sorted(self._topics)) or "none"
            raise ValueError(f"topic {topic!r} is not declared in the stage's topics ({declared})")
        data = value if isinstance(value, bytes) else orjson.dumps(value)
        raw_key = key.encode() if isinstance(key, str) else key
        self.emitted.append((max(of, 0), topic, raw_key, data))
