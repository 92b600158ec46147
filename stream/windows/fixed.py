"""Tumbling and hopping windows of one rule on one partition.

Windows are epoch aligned: tumbling ``[k*size, (k+1)*size)``; hopping windows
of ``size`` start every ``advance`` and an event belongs to every window whose
range holds it. State is ``{window start: {group key: WindowAcc}}`` plus a heap
of window starts, so closing is a heap pop per window start, not a scan.

An event is added to each of its windows that is still open at its position
in the batch (``end + grace > watermark``); it is *late* when none is. The
watermark at an event is only computed when the window could be closed at
all (``end + grace <= watermark after the batch``), which in steady state is
never. Windows are closed after the batch; because every event was checked
against the watermark at its own position, the result is the same as closing
them event by event.
"""

from __future__ import annotations

from collections.abc import Hashable
from heapq import heappop, heappush
from typing import Any

from stream.models import Correlation
from stream.windows.aggregates import WindowAcc
from stream.windows.changelog import TAG_WINDOW, Changes, encode, entry_key, group_key
from stream.windows.clock import Batch
from stream.windows.compiled import WindowRule, acc_correlation, emit_in_order
from stream.windows.judges import Judge
from stream.windows.spec import HoppingWindow, TumblingWindow
from stream.windows.store import NOTHING, KeyBudget, StoreOutcome

#: Rough bytes per (window, group) entry: object, dict slot, samples list.
_ENTRY_BYTES = 360


def dump_acc(acc: WindowAcc, dump_state: Any) -> list[Any]:
    return [
        acc.count,
        acc.first,
        acc.last,
        acc.samples,
        dump_state(acc.state),
        acc.early,
        acc.lo,
        acc.hi,
    ]


def load_acc(value: list[Any], load_state: Any) -> WindowAcc:
    """Load a dumped accumulator; state written before offsets were kept has 6 items."""
    count, first, last, samples, state, early = value[:6]
    acc = WindowAcc(load_state(state))
    if len(value) >= 8:
        acc.lo, acc.hi = int(value[6]), int(value[7])
    acc.count = count
    acc.first = first
    acc.last = last
    acc.samples = [(int(seq), str(event_id)) for seq, event_id in samples]
    acc.early = bool(early)
    acc.stored = True
    return acc


class FixedWindowStore:
    """State of one tumbling/hopping rule on one partition."""

    def __init__(self, rule: WindowRule, judge: Judge, budget: KeyBudget, sample_size: int) -> None:
        window = rule.window
        assert isinstance(window, TumblingWindow | HoppingWindow)
        self._rule = rule
        self._info = rule.info
        self._judge = judge
        self._budget = budget
        self._sample_size = sample_size
        self._size = window.size
        self._advance = window.size if isinstance(window, TumblingWindow) else window.advance
        #: window start + this = the watermark at which the window closes.
        self._close_after = window.size + window.grace
        self._buckets: dict[int, dict[Hashable, WindowAcc]] = {}
        self._starts: list[int] = []
        self._dirty: list[tuple[int, Hashable, WindowAcc]] = []
        self._keys = 0

    # -- hot path ----------------------------------------------------------------------------

    def process(self, batch: Batch, out: list[Correlation]) -> StoreOutcome:
        idx = self._rule.select(batch.events)
        if not idx:
            return NOTHING
        if self._advance == self._size:
            return self._process_tumbling(batch, idx, out)
        return self._process_hopping(batch, idx, out)

    def _process_tumbling(
        self, batch: Batch, idx: list[int], out: list[Correlation]
    ) -> StoreOutcome:
        events = batch.events
        times = batch.times
        offsets = batch.offsets
        seq0 = batch.seq0
        wm_end = batch.wm_end
        size = self._size
        close_after = self._close_after
        buckets = self._buckets
        key_of = self._rule.key_of
        add = self._rule.aggregation.add
        initial = self._rule.aggregation.initial
        sample_size = self._sample_size
        budget = self._budget
        dirty = self._dirty
        early = self._rule.emit_early
        late: list[int] = []
        refused = 0
        created = 0
        bucket_start = None
        bucket: dict[Hashable, WindowAcc] = {}
        for i in idx:
            t = times[i]
            start = t - t % size
            due = start + close_after
            if due <= wm_end and due <= batch.wm_at(i):
                late.append(i)
                continue
            event = events[i]
            key = key_of(event) if key_of is not None else ()
            if start != bucket_start:
                found = buckets.get(start)
                if found is None:
                    found = buckets[start] = {}
                    heappush(self._starts, start)
                bucket = found
                bucket_start = start
            acc = bucket.get(key)
            if acc is None:
                if budget.used >= budget.limit:
                    refused += 1
                    continue
                budget.used += 1
                created += 1
                acc = bucket[key] = WindowAcc(initial())
            acc.count += 1
            o = offsets[i]
            if o < acc.lo:
                acc.lo = o
            if o > acc.hi:
                acc.hi = o
            if t < acc.first:
                acc.first = t
            if t > acc.last:
                acc.last = t
            if acc.count <= sample_size:
                acc.samples.append((seq0 + i, batch.event_id(event)))
            if add is not None:
                add(acc, event, t)
            if not acc.dirty:
                acc.dirty = True
                dirty.append((start, key, acc))
            if early and not acc.early:
                self._maybe_early(key, start, acc, out)
        self._keys += created
        return StoreOutcome(late, refused)

    def _process_hopping(
        self, batch: Batch, idx: list[int], out: list[Correlation]
    ) -> StoreOutcome:
        events = batch.events
        times = batch.times
        offsets = batch.offsets
        seq0 = batch.seq0
        wm_end = batch.wm_end
        size = self._size
        advance = self._advance
        close_after = self._close_after
        buckets = self._buckets
        key_of = self._rule.key_of
        add = self._rule.aggregation.add
        initial = self._rule.aggregation.initial
        sample_size = self._sample_size
        budget = self._budget
        dirty = self._dirty
        early = self._rule.emit_early
        late: list[int] = []
        refused = 0
        created = 0
        for i in idx:
            t = times[i]
            start = t - t % advance
            oldest = t - size
            if oldest < -1:
                oldest = -1  # no window starts before the epoch (as in Kafka Streams)
            event = events[i]
            key = key_of(event) if key_of is not None else ()
            watermark: int | None = None
            accepted = capped = False
            # newest window first: it closes last, so once one is closed all older are
            while start > oldest:
                due = start + close_after
                if due <= wm_end:
                    if watermark is None:
                        watermark = batch.wm_at(i)
                    if due <= watermark:
                        break
                accepted = True
                bucket = buckets.get(start)
                if bucket is None:
                    bucket = buckets[start] = {}
                    heappush(self._starts, start)
                acc = bucket.get(key)
                if acc is None:
                    if budget.used >= budget.limit:
                        capped = True
                        start -= advance
                        continue
                    budget.used += 1
                    created += 1
                    acc = bucket[key] = WindowAcc(initial())
                acc.count += 1
                o = offsets[i]
                if o < acc.lo:
                    acc.lo = o
                if o > acc.hi:
                    acc.hi = o
                if t < acc.first:
                    acc.first = t
                if t > acc.last:
                    acc.last = t
                if acc.count <= sample_size:
                    acc.samples.append((seq0 + i, batch.event_id(event)))
                if add is not None:
                    add(acc, event, t)
                if not acc.dirty:
                    acc.dirty = True
                    dirty.append((start, key, acc))
                if early and not acc.early:
                    self._maybe_early(key, start, acc, out)
                start -= advance
            if not accepted:
                late.append(i)
            elif capped:
                refused += 1
        self._keys += created
        return StoreOutcome(late, refused)

    def _maybe_early(
        self, key: Hashable, start: int, acc: WindowAcc, out: list[Correlation]
    ) -> None:
        value = self._judge.early(key, acc)
        if value is not None:
            acc.early = True
            out.append(
                acc_correlation(self._info, key, start, start + self._size, value, acc, final=False)
            )

    # -- closing -----------------------------------------------------------------------------

    def close(self, watermark: int, out: list[Correlation]) -> None:
        starts = self._starts
        close_after = self._close_after
        judge = self._judge
        size = self._size
        closed: list[Correlation] = []
        while starts and starts[0] + close_after <= watermark:
            start = heappop(starts)
            bucket = self._buckets.pop(start)
            end = start + size
            for key, acc in bucket.items():
                value = judge.final(key, acc, end)
                if value is not None:
                    closed.append(
                        acc_correlation(self._info, key, start, end, value, acc, final=True)
                    )
                acc.live = False
                if not acc.dirty and acc.stored:
                    acc.dirty = True
                    self._dirty.append((start, key, acc))
            self._keys -= len(bucket)
            self._budget.used -= len(bucket)
        emit_in_order(closed, out)
        judge.expire(watermark)

    # -- changelog ---------------------------------------------------------------------------

    def drain(self, changes: Changes) -> None:
        info = self._info
        dump_state = self._rule.aggregation.dump
        for start, key, acc in self._dirty:
            acc.dirty = False
            if acc.live:
                changes[entry_key(info.name, info.fingerprint, TAG_WINDOW, start, key)] = encode(
                    dump_acc(acc, dump_state)
                )
                acc.stored = True
            elif acc.stored:
                changes[entry_key(info.name, info.fingerprint, TAG_WINDOW, start, key)] = None
                acc.stored = False
        self._dirty.clear()
        self._judge.drain(changes)

    def restore(self, tag: str, parts: list[Any], value: Any) -> bool:
        if tag != TAG_WINDOW:
            self._judge.restore(parts, value)
            return True
        start, raw_key = parts
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = {}
        key = group_key(raw_key)
        if key not in bucket:
            self._keys += 1
            self._budget.used += 1
        bucket[key] = load_acc(value, self._rule.aggregation.load)
        return True

    def finish_restore(self) -> None:
        self._starts = sorted(self._buckets)
        self._judge.finish_restore()

    def clear(self) -> None:
        self._budget.used -= self._keys
        self._keys = 0
        self._buckets.clear()
        self._starts.clear()
        self._dirty.clear()
        self._judge.clear()

    def keys(self) -> int:
        return self._keys + self._judge.keys()

    def approx_bytes(self) -> int:
        return self._keys * _ENTRY_BYTES + self._judge.approx_bytes()
