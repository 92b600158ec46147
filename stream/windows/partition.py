"""The window state of one input partition: its clock and one store per rule.

State is per input partition because the changelog is (changelog partition
== input partition): a worker that is assigned partition 3 restores exactly
the state of partition 3 and nothing else. Consequently groups are formed
*within* a partition; key the input topic by the group field (e.g. by
``source``) when a group must see all of its events in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from stream.models import Correlation
from stream.windows.changelog import CLOCK_KEY, Changes, decode, encode
from stream.windows.clock import Batch, PartitionClock
from stream.windows.compiled import CompiledRule, SequenceRule
from stream.windows.fixed import FixedWindowStore
from stream.windows.sequence import SequenceStore
from stream.windows.sessions import SessionStore
from stream.windows.spec import SessionWindow
from stream.windows.store import KeyBudget, RuleStore


class BatchOutcome(NamedTuple):
    """What one batch produced, with per-rule counts for the caller's metrics.

    ``late_by_rule[r]`` are the positions late for rule ``r`` (the same list objects
    the stores returned: nothing is copied on the hot path).
    """

    correlations: list[Correlation]
    late_positions: list[int]
    late_per_rule: list[int]
    refused_per_rule: list[int]
    late_by_rule: list[list[int]]


def make_store(rule: CompiledRule, budget: KeyBudget, sample_size: int) -> RuleStore:
    if isinstance(rule, SequenceRule):
        return SequenceStore(rule, budget, sample_size)
    judge = rule.make_judge()
    if isinstance(rule.window, SessionWindow):
        return SessionStore(rule, judge, budget, sample_size)
    return FixedWindowStore(rule, judge, budget, sample_size)


class PartitionState:
    """Clock + per-rule stores of one partition."""

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        budget: KeyBudget,
        *,
        lateness_ms: int,
        sample_size: int,
        event_id: Callable[[Any], str],
    ) -> None:
        self._rules = rules
        self._event_id = event_id
        self._lateness = lateness_ms
        self.clock = PartitionClock()
        self._clock_dirty = False
        self._stores = [make_store(rule, budget, sample_size) for rule in rules]
        self._by_name = {
            (rule.info.name, rule.info.fingerprint): store
            for rule, store in zip(rules, self._stores, strict=True)
        }
        #: Changelog keys found at restore that no current rule owns: tombstoned at next drain.
        self._stale: list[bytes] = []

    def process(
        self,
        events: Sequence[Any],
        times: Sequence[int],
        now_ms: int,
        offsets: Sequence[int] | None = None,
    ) -> BatchOutcome:
        clock = self.clock
        wm0 = clock.watermark
        seq0 = clock.seq
        wm_end = clock.observe(max(times), len(times), now_ms, self._lateness)
        self._clock_dirty = True
        batch = Batch(
            events,
            times,
            event_id=self._event_id,
            offsets=offsets,
            seq0=seq0,
            wm0=wm0,
            wm_end=wm_end,
            lateness=self._lateness,
        )
        out: list[Correlation] = []
        late_per_rule: list[int] = []
        refused_per_rule: list[int] = []
        late_sets: list[list[int]] = []
        late_by_rule: list[list[int]] = []
        for store in self._stores:
            outcome = store.process(batch, out)
            late_per_rule.append(len(outcome.late))
            refused_per_rule.append(outcome.refused)
            late_by_rule.append(outcome.late)
            if outcome.late:
                late_sets.append(outcome.late)
        for store in self._stores:
            store.close(wm_end, out)
        if not late_sets:
            late: list[int] = []
        elif len(late_sets) == 1:
            late = late_sets[0]
        else:
            late = sorted({i for positions in late_sets for i in positions})
        return BatchOutcome(out, late, late_per_rule, refused_per_rule, late_by_rule)

    def advance_idle(
        self, now_ms: int, idle_timeout_ms: int, out: list[Correlation], busy: bool = False
    ) -> None:
        """Close what the wall clock closes if idle; a ``busy`` partition only restarts its
        idle clock (records of it are on their way to the stage)."""
        if busy:
            self.clock.hold(now_ms)
            return
        if self.clock.advance_idle(now_ms, idle_timeout_ms):
            self._clock_dirty = True
            for store in self._stores:
                store.close(self.clock.watermark, out)

    def drain(self) -> list[tuple[bytes, bytes | None]]:
        changes: Changes = {}
        for key in self._stale:
            changes[key] = None
        self._stale.clear()
        for store in self._stores:
            store.drain(changes)
        if self._clock_dirty:
            changes[CLOCK_KEY] = encode(self.clock.dump())
            self._clock_dirty = False
        return list(changes.items())

    def restore(self, entries: Iterable[tuple[bytes, bytes | None]]) -> None:
        latest: dict[bytes, bytes | None] = {}
        for key, value in entries:
            latest[key] = value
        for key, value in latest.items():
            if value is None:
                continue
            if key == CLOCK_KEY:
                self.clock.load(decode(value))
                continue
            parts = decode(key)
            store = None
            if isinstance(parts, list) and len(parts) >= 4:
                store = self._by_name.get((parts[0], parts[1]))
            if store is None or not store.restore(parts[2], parts[3:], decode(value)):
                self._stale.append(key)
        for store in self._stores:
            store.finish_restore()

    def clear(self) -> None:
        for store in self._stores:
            store.clear()

    def keys_per_rule(self) -> list[int]:
        return [store.keys() for store in self._stores]

    def approx_bytes(self) -> int:
        return sum(store.approx_bytes() for store in self._stores)
