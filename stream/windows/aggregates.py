"""Per-window accumulators and the aggregate functions that update them.

One :class:`WindowAcc` (a ``__slots__`` object, no dict) holds what a window
knows about one group: event count, first/last event time, the first few
event ids, and the aggregate's own state (a float for ``sum``, a set for
``distinct``, ``[numerator, denominator]`` for a ratio, anything msgpack can
encode for a custom rule). The count, times and samples are updated inline by
the window stores; an :class:`Aggregation` only adds what its function needs,
so ``count`` costs nothing extra.

Samples are ``(sequence number, event id)`` pairs: the sequence number is the
event's position on its partition, so merging two sessions keeps exactly "the
first N events processed", the same as an uninterrupted or restored run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Protocol

from stream.windows.fields import Predicate, ValueExtractor
from stream.windows.spec import Aggregate

MAX_TIME: Final = 2**62
MIN_TIME: Final = -(2**62)


class Entry:
    """Changelog bookkeeping shared by everything a store persists.

    ``dirty``: changed since the last drain (and queued in the store's dirty
    list exactly once); ``stored``: the changelog holds a value for it (so its
    removal needs a tombstone); ``live``: still part of the state.
    """

    __slots__ = ("dirty", "live", "stored")

    def __init__(self) -> None:
        self.dirty = False
        self.stored = False
        self.live = True


class WindowAcc(Entry):
    """Aggregate of one group in one window."""

    __slots__ = ("count", "early", "first", "hi", "last", "lo", "samples", "state")

    def __init__(self, state: Any) -> None:
        super().__init__()
        self.count = 0
        self.first = MAX_TIME
        self.last = MIN_TIME
        #: Lowest and highest input offset of the events counted (lineage); -1: unknown.
        self.lo = MAX_TIME
        self.hi = -1
        self.samples: list[tuple[int, str]] = []
        self.state = state
        #: An early (non-final) record was already emitted for this window.
        self.early = False


class Aggregation(Protocol):
    """How one aggregate function keeps and reads its state in a :class:`WindowAcc`."""

    #: ``Correlation.aggregate`` label, e.g. ``count`` or ``sum(value)``.
    name: str
    #: Per-event update beyond count/times/samples, or None when there is none.
    add: Callable[[WindowAcc, Any, int], None] | None

    def initial(self) -> Any: ...
    def merge(self, into: WindowAcc, other: WindowAcc) -> None: ...
    def result(self, acc: WindowAcc) -> float: ...
    def dump(self, state: Any) -> Any: ...
    def load(self, raw: Any) -> Any: ...


def merge_common(into: WindowAcc, other: WindowAcc, sample_size: int) -> None:
    """Merge count, times, samples and the early flag of ``other`` into ``into``."""
    into.count += other.count
    into.first = min(into.first, other.first)
    into.last = max(into.last, other.last)
    into.lo = min(into.lo, other.lo)
    into.hi = max(into.hi, other.hi)
    if other.samples:
        into.samples = sorted(into.samples + other.samples)[:sample_size]
    into.early = into.early or other.early


class _Stateless:
    def initial(self) -> Any:
        return None

    def merge(self, into: WindowAcc, other: WindowAcc) -> None:
        return None

    def dump(self, state: Any) -> Any:
        return state

    def load(self, raw: Any) -> Any:
        return raw


class CountAggregation(_Stateless):
    def __init__(self) -> None:
        self.name = "count"
        self.add: Callable[[WindowAcc, Any, int], None] | None = None

    def result(self, acc: WindowAcc) -> float:
        return float(acc.count)


class SumAggregation:
    """``sum(field)`` and, with ``average=True``, ``avg(field)`` (sum / count)."""

    def __init__(self, name: str, value_of: ValueExtractor, *, average: bool) -> None:
        self.name = name
        self._average = average

        def add(acc: WindowAcc, event: Any, _t: int) -> None:
            acc.state += value_of(event)

        self.add: Callable[[WindowAcc, Any, int], None] | None = add

    def initial(self) -> Any:
        return 0.0

    def merge(self, into: WindowAcc, other: WindowAcc) -> None:
        into.state += other.state

    def result(self, acc: WindowAcc) -> float:
        total = float(acc.state)
        return total / acc.count if self._average and acc.count else total

    def dump(self, state: Any) -> Any:
        return float(state)

    def load(self, raw: Any) -> Any:
        return float(raw)


class ExtremeAggregation:
    """``min(field)`` / ``max(field)``."""

    def __init__(self, name: str, value_of: ValueExtractor, *, maximum: bool) -> None:
        self.name = name
        self._pick: Callable[[float, float], float] = max if maximum else min
        pick = self._pick

        def add(acc: WindowAcc, event: Any, _t: int) -> None:
            value = float(value_of(event))
            state = acc.state
            acc.state = value if state is None else pick(state, value)

        self.add: Callable[[WindowAcc, Any, int], None] | None = add

    def initial(self) -> Any:
        return None

    def merge(self, into: WindowAcc, other: WindowAcc) -> None:
        if other.state is not None:
            into.state = other.state if into.state is None else self._pick(into.state, other.state)

    def result(self, acc: WindowAcc) -> float:
        return math.nan if acc.state is None else float(acc.state)

    def dump(self, state: Any) -> Any:
        return state

    def load(self, raw: Any) -> Any:
        return raw


class DistinctAggregation:
    """``distinct(field)``: the number of different values."""

    def __init__(self, name: str, value_of: ValueExtractor) -> None:
        self.name = name

        def add(acc: WindowAcc, event: Any, _t: int) -> None:
            acc.state.add(value_of(event))

        self.add: Callable[[WindowAcc, Any, int], None] | None = add

    def initial(self) -> Any:
        return set()

    def merge(self, into: WindowAcc, other: WindowAcc) -> None:
        into.state |= other.state

    def result(self, acc: WindowAcc) -> float:
        return float(len(acc.state))

    def dump(self, state: Any) -> Any:
        return sorted(state, key=repr)

    def load(self, raw: Any) -> Any:
        return set(raw)


class RatioAggregation:
    """``[numerator count, denominator count]`` from two compiled predicates."""

    name = "ratio"

    def __init__(self, numerator: Predicate, denominator: Predicate | None) -> None:
        if denominator is None:

            def add(acc: WindowAcc, event: Any, _t: int) -> None:
                state = acc.state
                state[1] += 1
                if numerator(event):
                    state[0] += 1

        else:

            def add(acc: WindowAcc, event: Any, _t: int) -> None:
                state = acc.state
                if denominator(event):
                    state[1] += 1
                if numerator(event):
                    state[0] += 1

        self.add: Callable[[WindowAcc, Any, int], None] | None = add

    def initial(self) -> Any:
        return [0, 0]

    def merge(self, into: WindowAcc, other: WindowAcc) -> None:
        into.state[0] += other.state[0]
        into.state[1] += other.state[1]

    def result(self, acc: WindowAcc) -> float:
        numerator, denominator = acc.state
        return numerator / denominator if denominator else math.nan

    def dump(self, state: Any) -> Any:
        return list(state)

    def load(self, raw: Any) -> Any:
        return [int(raw[0]), int(raw[1])]


def aggregation_for(spec: Aggregate, value_of: ValueExtractor | None) -> Aggregation:
    """The :class:`Aggregation` of a threshold/anomaly ``aggregate:`` spec."""
    name = str(spec)
    if spec.function == "count":
        return CountAggregation()
    assert value_of is not None
    if spec.function in ("sum", "avg"):
        return SumAggregation(name, value_of, average=spec.function == "avg")
    if spec.function in ("min", "max"):
        return ExtremeAggregation(name, value_of, maximum=spec.function == "max")
    return DistinctAggregation(name, value_of)
