"""Sequence rules: step 1, then step 2 (then step 3 ...) for one group within a span.

Every step-1 event at time ``a`` (the *anchor*) opens a window ``[a, a + within)``
that closes when the watermark reaches ``a + within + grace``. At close the
window matches if, in event-time order (ties by arrival), there are at least
``min_count`` step-2 events after the anchor, then ``min_count`` step-3 events
after the step-2 requirement was met, and so on. Greedy earliest matching is
exact for this question. The record's ``value`` is the number of last-step
events after the previous step completed; ``count`` the distinct events
involved; samples the first of them in event-time order.

Events may arrive out of order, so a later-step event that arrives before its
anchor must still count: later-step events are buffered per group until no
open or future window can contain them (``t + within + grace <= watermark``).
Pick selective step matches — the buffer holds ``within + grace`` of them.

Cost: anchors and buffered step events are kept sorted by (event time, arrival)
— appends, as events mostly arrive in order — so closing a window, expiring old
step events and counting a window's step events are binary searches and slices,
not scans of the buffer. (Scanning made the worker quadratic in the buffer: the
demo's ``deploy-then-errors`` rule buffers ~60k error events, and once they began
to expire the worker fell from 20k to 7k events/s.)

Unlike fixed windows, a later-step event can arrive after its anchor's
window closed without being late (a newer anchor may still use it), so
windows here are closed *eagerly*, at the event whose watermark passes them,
before that event is added. An event is late when no window that could hold
it is open (``t + within + grace <= watermark``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Hashable
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any, TypeVar

from stream.models import Correlation
from stream.windows.aggregates import Entry
from stream.windows.changelog import TAG_SEQUENCE, Changes, encode, entry_key, group_key
from stream.windows.clock import Batch
from stream.windows.compiled import SequenceRule, build_correlation, emit_in_order
from stream.windows.store import NOTHING, KeyBudget, StoreOutcome

_GROUP_BYTES = 360
_EVENT_BYTES = 120
_NO_DUE = 2**62

#: (event time, sequence number, event id)
StepEvent = tuple[int, int, str]
T = TypeVar("T")


def _time(event: StepEvent) -> int:
    return event[0]


def _time_seq(event: StepEvent) -> tuple[int, int]:
    return event[0], event[1]


def _anchor_time(anchor: Anchor) -> int:
    return anchor.event[0]


def _anchor_order(anchor: Anchor) -> tuple[int, int]:
    return _time_seq(anchor.event)


def _add_sorted(items: list[T], item: T, key: Callable[[T], tuple[int, int]]) -> None:
    """Append ``item``, or insert it in order when it arrived out of order."""
    if items and key(items[-1]) > key(item):
        insort(items, item, key=key)
    else:
        items.append(item)


class Anchor:
    __slots__ = ("early", "event")

    def __init__(self, event: StepEvent, early: bool = False) -> None:
        self.event = event
        self.early = early


class SequenceGroup(Entry):
    """Open anchors and buffered later-step events of one group key, each list
    sorted by (event time, sequence number)."""

    __slots__ = ("anchors", "due", "steps")

    def __init__(self, later_steps: int) -> None:
        super().__init__()
        self.anchors: list[Anchor] = []
        self.steps: list[list[StepEvent]] = [[] for _ in range(later_steps)]
        self.due = _NO_DUE

    def size(self) -> int:
        return len(self.anchors) + sum(len(s) for s in self.steps)


class SequenceStore:
    """State of one sequence rule on one partition."""

    def __init__(self, rule: SequenceRule, budget: KeyBudget, sample_size: int) -> None:
        self._rule = rule
        self._info = rule.info
        self._budget = budget
        self._sample_size = sample_size
        self._horizon = rule.within + rule.grace
        self._groups: dict[Hashable, SequenceGroup] = {}
        self._heap: list[tuple[int, int, Hashable]] = []
        self._tiebreak = count()
        self._dirty: list[tuple[Hashable, SequenceGroup]] = []
        self._buffered = 0

    def _schedule(self, key: Hashable, group: SequenceGroup, due: int) -> None:
        if due < group.due:
            group.due = due
            heappush(self._heap, (due, next(self._tiebreak), key))

    def _touch(self, key: Hashable, group: SequenceGroup) -> None:
        if not group.dirty:
            group.dirty = True
            self._dirty.append((key, group))

    def process(self, batch: Batch, out: list[Correlation]) -> StoreOutcome:
        idx = self._rule.select(batch.events)
        if not idx:
            return NOTHING
        rule = self._rule
        steps = rule.steps
        key_of = rule.key_of
        horizon = self._horizon
        heap = self._heap
        budget = self._budget
        late: list[int] = []
        refused = 0
        for i in idx:
            watermark = batch.wm_at(i)
            if heap and heap[0][0] <= watermark:
                self.close(watermark, out)
            t = batch.times[i]
            if t + horizon <= watermark:
                late.append(i)
                continue
            event = batch.events[i]
            key = key_of(event) if key_of is not None else ()
            group = self._groups.get(key)
            if group is None:
                if budget.used >= budget.limit:
                    refused += 1
                    continue
                budget.used += 1
                group = self._groups[key] = SequenceGroup(len(steps) - 1)
            step_event = (t, batch.seq0 + i, batch.event_id(event))
            if steps[0](event):
                _add_sorted(group.anchors, Anchor(step_event), _anchor_order)
                self._buffered += 1
            for j in range(1, len(steps)):
                if steps[j](event):
                    _add_sorted(group.steps[j - 1], step_event, _time_seq)
                    self._buffered += 1
            self._schedule(key, group, t + horizon)
            self._touch(key, group)
            if rule.emit_early:
                self._emit_early(key, group, out)
        return StoreOutcome(late, refused)

    def _emit_early(self, key: Hashable, group: SequenceGroup, out: list[Correlation]) -> None:
        for anchor in group.anchors:
            if not anchor.early:
                record = self._evaluate(key, group, anchor, final=False)
                if record is not None:
                    anchor.early = True
                    out.append(record)

    def _evaluate(
        self, key: Hashable, group: SequenceGroup, anchor: Anchor, *, final: bool
    ) -> Correlation | None:
        a, a_seq, _ = anchor.event
        end = a + self._rule.within
        after: tuple[int, int] = (a, a_seq)
        involved: dict[int, StepEvent] = {a_seq: anchor.event}
        candidates: list[StepEvent] = []
        for buffered, need in zip(group.steps, self._rule.min_counts[1:], strict=True):
            # events after ``after`` (so at or after the anchor) and before the window's end
            lo = bisect_right(buffered, after, key=_time_seq)
            hi = bisect_left(buffered, end, key=_time)
            if hi - lo < need:
                return None
            candidates = buffered[lo:hi]
            after = _time_seq(candidates[need - 1])
            for e in candidates:
                involved[e[1]] = e
        ordered = sorted(involved.values())
        return build_correlation(
            self._info,
            key,
            a,
            end,
            float(len(candidates)),
            len(ordered),
            a,
            ordered[-1][0],
            [(seq, event_id) for _, seq, event_id in ordered[: self._sample_size]],
            final=final,
        )

    def close(self, watermark: int, out: list[Correlation]) -> None:
        heap = self._heap
        closed: list[Correlation] = []
        while heap and heap[0][0] <= watermark:
            due, _, key = heappop(heap)
            group = self._groups.get(key)
            if group is None or group.due != due:
                continue  # superseded entry
            group.due = _NO_DUE
            self._close_group(key, group, watermark, closed)
        emit_in_order(closed, out)

    def _close_group(
        self, key: Hashable, group: SequenceGroup, watermark: int, out: list[Correlation]
    ) -> None:
        expired = watermark - self._horizon  # times at or before this have closed
        before = group.size()
        anchors = group.anchors
        closing = bisect_right(anchors, expired, key=_anchor_time)
        for anchor in anchors[:closing]:
            record = self._evaluate(key, group, anchor, final=True)
            if record is not None:
                out.append(record)
        # only now drop expired step events: every closing anchor has seen them
        del anchors[:closing]
        for buffered in group.steps:
            del buffered[: bisect_right(buffered, expired, key=_time)]
        after = group.size()
        self._buffered -= before - after
        self._touch(key, group)
        if after == 0:
            del self._groups[key]
            group.live = False
            self._budget.used -= 1
            return
        oldest = [s[0][0] for s in group.steps if s]
        if anchors:
            oldest.append(anchors[0].event[0])
        self._schedule(key, group, min(oldest) + self._horizon)

    def drain(self, changes: Changes) -> None:
        info = self._info
        for key, group in self._dirty:
            group.dirty = False
            entry = entry_key(info.name, info.fingerprint, TAG_SEQUENCE, key)
            if group.live:
                anchors = [[*a.event, a.early] for a in group.anchors]
                changes[entry] = encode([anchors, group.steps])
                group.stored = True
            elif group.stored:
                changes[entry] = None
                group.stored = False
        self._dirty.clear()

    def restore(self, tag: str, parts: list[Any], value: Any) -> bool:
        if tag != TAG_SEQUENCE:
            return False
        key = group_key(parts[0])
        anchors, steps = value
        group = self._groups.get(key)
        if group is None:
            self._budget.used += 1
        else:
            self._buffered -= group.size()
        group = self._groups[key] = SequenceGroup(len(self._rule.steps) - 1)
        group.anchors = sorted(
            (Anchor((int(t), int(s), str(i)), bool(early)) for t, s, i, early in anchors),
            key=_anchor_order,
        )
        group.steps = [
            sorted(((int(t), int(s), str(i)) for t, s, i in step), key=_time_seq) for step in steps
        ]
        group.stored = True
        self._buffered += group.size()
        return True

    def finish_restore(self) -> None:
        self._heap = []
        horizon = self._horizon
        for key, group in list(self._groups.items()):
            times = [a.event[0] for a in group.anchors] + [e[0] for s in group.steps for e in s]
            if not times:  # never written empty; tolerate it anyway
                del self._groups[key]
                self._budget.used -= 1
                continue
            group.due = min(times) + horizon
            self._heap.append((group.due, next(self._tiebreak), key))
        heapify(self._heap)

    def clear(self) -> None:
        self._budget.used -= len(self._groups)
        self._groups.clear()
        self._heap.clear()
        self._dirty.clear()
        self._buffered = 0

    def keys(self) -> int:
        return len(self._groups)

    def approx_bytes(self) -> int:
        return len(self._groups) * _GROUP_BYTES + self._buffered * _EVENT_BYTES
