"""What every per-rule window store shares: the key budget and the store protocol.

A store holds one rule's state for one partition. The partition engine calls
``process`` once per batch (the store selects its events itself), ``close``
whenever the watermark moved, ``drain`` at checkpoints and ``restore`` with
changelog entries after a rebalance.
"""

from __future__ import annotations

from typing import Any, Protocol

from stream.models import Correlation
from stream.windows.changelog import Changes
from stream.windows.clock import Batch


class KeyBudget:
    """The ``max_keys`` cap on live state entries, shared by all rules and partitions."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class StoreOutcome:
    """Per-batch counts a store reports back (late positions, events refused by the cap)."""

    __slots__ = ("late", "refused")

    def __init__(self, late: list[int], refused: int) -> None:
        self.late = late
        self.refused = refused


NOTHING: StoreOutcome = StoreOutcome([], 0)


class RuleStore(Protocol):
    """One rule's window state on one partition."""

    def process(self, batch: Batch, out: list[Correlation]) -> StoreOutcome:
        """Fold the batch's matching events in; early records go to ``out``."""
        ...

    def close(self, watermark: int, out: list[Correlation]) -> None:
        """Emit final records of windows the watermark closed; evict what expired."""
        ...

    def drain(self, changes: Changes) -> None:
        """Add every entry changed since the last drain (value or tombstone)."""
        ...

    def restore(self, tag: str, parts: list[Any], value: Any) -> bool:
        """Load one changelog entry; False if it does not belong to this store."""
        ...

    def finish_restore(self) -> None:
        """Rebuild indexes (close-time heaps) after all entries were loaded."""
        ...

    def clear(self) -> None:
        """Drop everything (partition revoked), returning its keys to the budget."""
        ...

    def keys(self) -> int:
        """Live state entries (window x group, session groups, sequence groups, baselines)."""
        ...

    def approx_bytes(self) -> int: ...
