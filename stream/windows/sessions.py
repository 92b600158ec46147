"""Session windows of one rule on one partition.

Each event covers ``[t, t + gap)``; a group's sessions are the connected runs
of those intervals, i.e. events less than ``gap`` apart share a session. A
session spans ``[first event, last event + gap)`` and closes when the
watermark reaches ``last event + gap + grace``.

An event is *late* when the session it would start on its own is already
closed (``t + gap + grace <= watermark``) or when it would join a closed
session (adding it would change a result already emitted). To answer the
second question a closed session stays in state as a marker (bounds only, no
aggregate) until no non-late event can reach it any more (watermark
``>= last + 2*gap + grace``). This also makes final results idempotent: a
session is emitted once, however events arrive around it.

Closing uses a heap of ``(due, n, group)`` with lazy invalidation: each group
has one current entry (``group.due``); extending a session only makes its due
later, so the old entry pops early, the group is re-examined and re-queued.
"""

from __future__ import annotations

from collections.abc import Hashable
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any

from stream.models import Correlation
from stream.windows.aggregates import Entry, WindowAcc, merge_common
from stream.windows.changelog import TAG_SESSIONS, Changes, encode, entry_key, group_key
from stream.windows.clock import Batch
from stream.windows.compiled import WindowRule, acc_correlation, emit_in_order
from stream.windows.fixed import dump_acc, load_acc
from stream.windows.judges import Judge
from stream.windows.spec import SessionWindow
from stream.windows.store import NOTHING, KeyBudget, StoreOutcome

_GROUP_BYTES = 420
_NO_DUE = 2**62


class Session:
    """One session of a group. ``acc`` is None once closed (a marker)."""

    __slots__ = ("acc", "last", "start")

    def __init__(self, start: int, last: int, acc: WindowAcc | None) -> None:
        self.start = start
        self.last = last
        self.acc = acc


class SessionGroup(Entry):
    """All sessions (open and closed markers) of one group key."""

    __slots__ = ("due", "sessions")

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[Session] = []
        self.due = _NO_DUE


class SessionStore:
    """State of one session-window rule on one partition."""

    def __init__(self, rule: WindowRule, judge: Judge, budget: KeyBudget, sample_size: int) -> None:
        window = rule.window
        assert isinstance(window, SessionWindow)
        self._rule = rule
        self._info = rule.info
        self._judge = judge
        self._budget = budget
        self._sample_size = sample_size
        self._gap = window.gap
        self._grace = window.grace
        self._groups: dict[Hashable, SessionGroup] = {}
        self._heap: list[tuple[int, int, Hashable]] = []
        self._tiebreak = count()
        self._dirty: list[tuple[Hashable, SessionGroup]] = []

    def _close_due(self, session: Session) -> int:
        """Watermark at which an open session closes / a marker can be forgotten."""
        if session.acc is None:
            return session.last + 2 * self._gap + self._grace
        return session.last + self._gap + self._grace

    def _schedule(self, key: Hashable, group: SessionGroup, due: int) -> None:
        if due < group.due:
            group.due = due
            heappush(self._heap, (due, next(self._tiebreak), key))

    def _touch(self, key: Hashable, group: SessionGroup) -> None:
        if not group.dirty:
            group.dirty = True
            self._dirty.append((key, group))

    # -- hot path ----------------------------------------------------------------------------

    def process(self, batch: Batch, out: list[Correlation]) -> StoreOutcome:
        idx = self._rule.select(batch.events)
        if not idx:
            return NOTHING
        events = batch.events
        times = batch.times
        wm_end = batch.wm_end
        gap = self._gap
        grace = self._grace
        groups = self._groups
        key_of = self._rule.key_of
        aggregation = self._rule.aggregation
        add = aggregation.add
        budget = self._budget
        late: list[int] = []
        refused = 0
        for i in idx:
            t = times[i]
            event = events[i]
            key = key_of(event) if key_of is not None else ()
            group = groups.get(key)
            reach = t + gap
            overlapping: list[Session] = []
            if group is not None:
                overlapping = [s for s in group.sessions if t < s.last + gap and s.start < reach]
            if self._is_late(batch, i, reach + grace, overlapping, wm_end):
                late.append(i)
                continue
            if group is None:
                if budget.used >= budget.limit:
                    refused += 1
                    continue
                budget.used += 1
                group = groups[key] = SessionGroup()
            if overlapping:
                session = overlapping[0]
                for other in overlapping[1:]:
                    self._merge(session, other)
                    group.sessions.remove(other)
                if t < session.start:
                    session.start = t
                if t > session.last:
                    session.last = t
                acc = session.acc
                assert acc is not None
            else:
                acc = WindowAcc(aggregation.initial())
                session = Session(t, t, acc)
                group.sessions.append(session)
                self._schedule(key, group, reach + grace)
            acc.count += 1
            acc.first = min(acc.first, t)
            acc.last = max(acc.last, t)
            o = batch.offsets[i]
            if o < acc.lo:
                acc.lo = o
            if o > acc.hi:
                acc.hi = o
            if acc.count <= self._sample_size:
                acc.samples.append((batch.seq0 + i, batch.event_id(event)))
            if add is not None:
                add(acc, event, t)
            self._touch(key, group)
            if self._rule.emit_early and not acc.early:
                value = self._judge.early(key, acc)
                if value is not None:
                    acc.early = True
                    end = session.last + gap
                    out.append(
                        acc_correlation(
                            self._info, key, session.start, end, value, acc, final=False
                        )
                    )
        return StoreOutcome(late, refused)

    def _is_late(
        self,
        batch: Batch,
        i: int,
        alone_due: int,
        overlapping: list[Session],
        wm_end: int,
    ) -> bool:
        watermark: int | None = None
        dues = [self._close_due(s) for s in overlapping if s.acc is not None]
        if len(dues) < len(overlapping):
            return True  # would join a closed session
        dues.append(alone_due)
        for due in dues:
            if due <= wm_end:
                if watermark is None:
                    watermark = batch.wm_at(i)
                if due <= watermark:
                    return True
        return False

    def _merge(self, into: Session, other: Session) -> None:
        assert into.acc is not None and other.acc is not None
        into.start = min(into.start, other.start)
        into.last = max(into.last, other.last)
        self._rule.aggregation.merge(into.acc, other.acc)
        merge_common(into.acc, other.acc, self._sample_size)

    # -- closing -----------------------------------------------------------------------------

    def close(self, watermark: int, out: list[Correlation]) -> None:
        heap = self._heap
        closed: list[Correlation] = []
        groups = self._groups
        while heap and heap[0][0] <= watermark:
            due, _, key = heappop(heap)
            group = groups.get(key)
            if group is None or group.due != due:
                continue  # superseded entry
            group.due = _NO_DUE
            self._close_group(key, group, watermark, closed)
        self._judge.expire(watermark)
        emit_in_order(closed, out)

    def _close_group(
        self, key: Hashable, group: SessionGroup, watermark: int, out: list[Correlation]
    ) -> None:
        gap = self._gap
        closing = sorted(
            (s for s in group.sessions if s.acc is not None and self._close_due(s) <= watermark),
            key=lambda s: s.last,
        )
        for session in closing:
            acc = session.acc
            assert acc is not None
            end = session.last + gap
            value = self._judge.final(key, acc, end)
            if value is not None:
                out.append(
                    acc_correlation(self._info, key, session.start, end, value, acc, final=True)
                )
            session.acc = None
        group.sessions = [s for s in group.sessions if self._close_due(s) > watermark]
        if closing or not group.sessions:
            self._touch(key, group)
        if not group.sessions:
            del self._groups[key]
            group.live = False
            self._budget.used -= 1
            return
        self._schedule(key, group, min(self._close_due(s) for s in group.sessions))

    # -- changelog ---------------------------------------------------------------------------

    def drain(self, changes: Changes) -> None:
        info = self._info
        dump_state = self._rule.aggregation.dump
        for key, group in self._dirty:
            group.dirty = False
            entry = entry_key(info.name, info.fingerprint, TAG_SESSIONS, key)
            if group.live:
                changes[entry] = encode(
                    [
                        [s.start, s.last, None if s.acc is None else dump_acc(s.acc, dump_state)]
                        for s in group.sessions
                    ]
                )
                group.stored = True
            elif group.stored:
                changes[entry] = None
                group.stored = False
        self._dirty.clear()
        self._judge.drain(changes)

    def restore(self, tag: str, parts: list[Any], value: Any) -> bool:
        if tag != TAG_SESSIONS:
            self._judge.restore(parts, value)
            return True
        key = group_key(parts[0])
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = SessionGroup()
            self._budget.used += 1
        load_state = self._rule.aggregation.load
        group.sessions = [
            Session(start, last, None if acc is None else load_acc(acc, load_state))
            for start, last, acc in value
        ]
        group.stored = True
        return True

    def finish_restore(self) -> None:
        self._heap = []
        for key, group in self._groups.items():
            group.due = min(self._close_due(s) for s in group.sessions)
            self._heap.append((group.due, next(self._tiebreak), key))
        heapify(self._heap)
        self._judge.finish_restore()

    def clear(self) -> None:
        self._budget.used -= len(self._groups)
        self._groups.clear()
        self._heap.clear()
        self._dirty.clear()
        self._judge.clear()

    def keys(self) -> int:
        return len(self._groups) + self._judge.keys()

    def approx_bytes(self) -> int:
        return len(self._groups) * _GROUP_BYTES + self._judge.approx_bytes()
