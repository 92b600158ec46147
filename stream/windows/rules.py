"""Correlation logic written in Python: subclass :class:`Rule`.

A custom rule gets everything the built-in rules get — event-time windows
(tumbling, hopping or session), watermarks, grace, late-event handling, the
key cap, changelog persistence and exact restore — and supplies only the
aggregation::

    class SlowCheckout(Rule):
        name = "slow-checkout"
        window = TumblingWindow(type="tumbling", size=60_000)
        match = {"type": "checkout"}
        group_by = ("source",)

        def initial(self) -> list[float]:
            return [0.0, 0.0]                      # [slow, total]

        def add(self, state, event, event_time):
            state[1] += 1
            if (event.value or 0) > 2_000:
                state[0] += 1
            return state

        def result(self, state, count):
            return state[0] / state[1] if state[1] >= 20 and state[0] / state[1] > 0.1 else None

``result`` returns the correlation's value, or ``None`` for "no correlation".
The state must be msgpack-encodable (numbers, strings, lists, dicts): it is
what the changelog stores; after a restore, tuples come back as lists.
Rules over session windows must also implement :meth:`Rule.merge`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from stream.windows.spec import HoppingWindow, SessionWindow, TumblingWindow


class Rule(ABC):
    """Base class of custom correlation rules (set the class attributes, implement 3 methods)."""

    #: Unique rule name (``Correlation.rule``, metric label).
    name: ClassVar[str]
    #: The windows the rule aggregates over.
    window: ClassVar[TumblingWindow | HoppingWindow | SessionWindow]
    #: Declarative pre-filter, same syntax as the YAML ``match:`` (compiled, fast).
    match: ClassVar[Mapping[str, object]] = {}
    #: Group key fields (same syntax as YAML ``group_by``).
    group_by: ClassVar[tuple[str, ...]] = ()
    emit_early: ClassVar[bool] = False
    #: ``Correlation.kind`` and ``Correlation.aggregate`` of the records.
    kind: ClassVar[str] = "custom"
    aggregate: ClassVar[str] = "custom"
    #: Bump when the state layout or meaning changes: old changelog state is then discarded.
    version: ClassVar[str] = "1"

    def matches(self, event: Any) -> bool:
        """Extra per-event filter after ``match`` (override only if ``match`` cannot say it)."""
        return True

    @abstractmethod
    def initial(self) -> Any:
        """State of a new window."""

    @abstractmethod
    def add(self, state: Any, event: Any, event_time: int) -> Any:
        """Fold one event in; return the (possibly same, mutated) state."""

    def merge(self, left: Any, right: Any) -> Any:
        """Combine the states of two sessions that an event joined (session windows only)."""
        raise NotImplementedError(f"rule {self.name!r} uses session windows but has no merge()")

    @abstractmethod
    def result(self, state: Any, count: int) -> float | None:
        """The correlation value when the window qualifies, else ``None``."""

    def overrides_matches(self) -> bool:
        return type(self).matches is not Rule.matches
