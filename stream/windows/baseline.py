"""Anomaly judge: a window's aggregate against the group's rolling baseline.

Baseline = the aggregate values of the group's last ``baseline_windows``
closed windows (all of them, anomalous or not), kept in a ring buffer. When a
window closes, its value ``x`` is an anomaly if the baseline holds at least
``min_samples`` values and ``|x - mean| > k * max(stddev, min_stddev)`` (only
above / below the mean with ``direction``); mean and population standard
deviation are recomputed exactly from the buffer (at most a few dozen floats,
once per closed window — no drift from incremental updates, and a restored
run computes bit-identical numbers). Then ``x`` joins the baseline.

Windows of one group close in order of their end (the watermark only grows),
so "the last N windows" is well defined and the same after a restore.
Baselines of groups without a closed window for ``ttl`` of event time are
forgotten; because windows close in end order, the dict's insertion order is
the expiry order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Any, Literal

from stream.windows.aggregates import Aggregation, Entry, WindowAcc
from stream.windows.changelog import TAG_BASELINE, Changes, encode, entry_key, group_key
from stream.windows.judges import Judge

Direction = Literal["both", "above", "below"]

#: Rough bytes per baseline: object + deque + float per value.
_BASELINE_BYTES = 200
_VALUE_BYTES = 32


class Baseline(Entry):
    __slots__ = ("last_end", "values")

    def __init__(self, values: deque[float], last_end: int) -> None:
        super().__init__()
        self.values = values
        self.last_end = last_end


class AnomalyJudge(Judge):
    """Per-partition baselines of one anomaly rule."""

    def __init__(
        self,
        *,
        rule: str,
        fingerprint: str,
        aggregation: Aggregation,
        k: float,
        direction: Direction,
        baseline_windows: int,
        min_samples: int,
        min_stddev: float,
        ttl_ms: int,
    ) -> None:
        self._rule = rule
        self._fingerprint = fingerprint
        self._result = aggregation.result
        self._k = k
        self._direction = direction
        self._size = baseline_windows
        self._min_samples = min_samples
        self._min_stddev = min_stddev
        self._ttl = ttl_ms
        self._baselines: dict[Hashable, Baseline] = {}
        self._dirty: list[tuple[Hashable, Baseline]] = []

    def _deviates(self, baseline: Baseline | None, value: float) -> bool:
        if baseline is None or len(baseline.values) < self._min_samples:
            return False
        values = baseline.values
        n = len(values)
        mean = math.fsum(values) / n
        stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
        limit = self._k * max(stddev, self._min_stddev)
        deviation = value - mean
        if self._direction == "above":
            return deviation > limit
        if self._direction == "below":
            return -deviation > limit
        return abs(deviation) > limit

    def early(self, key: Hashable, acc: WindowAcc) -> float | None:
        value = self._result(acc)
        return value if self._deviates(self._baselines.get(key), value) else None

    def final(self, key: Hashable, acc: WindowAcc, end: int) -> float | None:
        value = self._result(acc)
        if math.isnan(value):
            return None
        baseline = self._baselines.pop(key, None)
        anomalous = self._deviates(baseline, value)
        if baseline is None:
            baseline = Baseline(deque(maxlen=self._size), end)
        baseline.values.append(value)
        baseline.last_end = end
        self._baselines[key] = baseline  # re-insert: dict order = expiry order
        self._touch(key, baseline)
        return value if anomalous else None

    def _touch(self, key: Hashable, baseline: Baseline) -> None:
        if not baseline.dirty:
            baseline.dirty = True
            self._dirty.append((key, baseline))

    def expire(self, watermark: int) -> None:
        baselines = self._baselines
        while baselines:
            key = next(iter(baselines))
            baseline = baselines[key]
            if baseline.last_end + self._ttl > watermark:
                break
            del baselines[key]
            baseline.live = False
            self._touch(key, baseline)

    def drain(self, changes: Changes) -> None:
        for key, baseline in self._dirty:
            baseline.dirty = False
            entry = entry_key(self._rule, self._fingerprint, TAG_BASELINE, key)
            if baseline.live:
                changes[entry] = encode((baseline.last_end, list(baseline.values)))
                baseline.stored = True
            elif baseline.stored:
                changes[entry] = None
                baseline.stored = False
        self._dirty.clear()

    def restore(self, parts: list[Any], value: Any) -> None:
        last_end, values = value
        baseline = Baseline(deque((float(v) for v in values), maxlen=self._size), int(last_end))
        baseline.stored = True
        self._baselines[group_key(parts[0])] = baseline

    def finish_restore(self) -> None:
        # restored entries arrive in changelog order; the dict must be in expiry order
        self._baselines = dict(sorted(self._baselines.items(), key=lambda kv: kv[1].last_end))

    def keys(self) -> int:
        return len(self._baselines)

    def approx_bytes(self) -> int:
        return len(self._baselines) * (_BASELINE_BYTES + _VALUE_BYTES * self._size)

    def clear(self) -> int:
        dropped = len(self._baselines)
        self._baselines.clear()
        self._dirty.clear()
        return dropped
