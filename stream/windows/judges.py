"""Judges decide, when a window closes (or early), whether it yields a correlation.

A judge turns a window's accumulator into the correlation value, or ``None``
for "no correlation". Threshold and ratio judges are stateless. The anomaly
judge keeps a rolling baseline per group (see :mod:`stream.windows.baseline`),
so judges take part in the state lifecycle too; :class:`Judge` gives the
stateless ones no-op implementations.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from stream.windows.aggregates import Aggregation, WindowAcc
from stream.windows.changelog import Changes
from stream.windows.rules import Rule
from stream.windows.spec import Condition


class Judge:
    """Stateless base: no baseline, nothing to persist."""

    def final(self, key: Hashable, acc: WindowAcc, end: int) -> float | None:
        """Value of the final record of a closing window ending at ``end``, or None."""
        return self.early(key, acc)

    def early(self, key: Hashable, acc: WindowAcc) -> float | None:
        """Value of an early record for an open window, or None."""
        raise NotImplementedError

    def expire(self, watermark: int) -> None:
        """Forget state that no future window can use."""

    def drain(self, changes: Changes) -> None:
        """Add changed entries to ``changes``."""

    def restore(self, parts: list[Any], value: Any) -> None:
        """Load one changelog entry."""

    def finish_restore(self) -> None:
        """Called once after all entries were loaded."""

    def keys(self) -> int:
        return 0

    def approx_bytes(self) -> int:
        return 0

    def clear(self) -> int:
        """Drop all state; returns the number of entries dropped."""
        return 0


class ThresholdJudge(Judge):
    """``aggregate when``: the aggregate value if the condition holds."""

    def __init__(self, aggregation: Aggregation, when: Condition) -> None:
        self._result = aggregation.result
        self._holds = when.holds

    def early(self, key: Hashable, acc: WindowAcc) -> float | None:
        value = self._result(acc)
        return value if self._holds(value) else None


class RatioJudge(Judge):
    """numerator / denominator if the denominator reached ``min_volume`` and ``when`` holds."""

    def __init__(self, when: Condition, min_volume: int) -> None:
        self._holds = when.holds
        self._min_volume = min_volume

    def early(self, key: Hashable, acc: WindowAcc) -> float | None:
        numerator, denominator = acc.state
        if denominator < self._min_volume:
            return None
        value: float = numerator / denominator
        return value if self._holds(value) else None


class CustomJudge(Judge):
    """Delegates to a Python :class:`~stream.windows.rules.Rule`'s ``result``."""

    def __init__(self, rule: Rule) -> None:
        self._rule = rule

    def early(self, key: Hashable, acc: WindowAcc) -> float | None:
        value = self._rule.result(acc.state, acc.count)
        return None if value is None else float(value)
