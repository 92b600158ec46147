"""Correlate stage: windowed rules over event time, with exact, restorable state.

The runner calls :meth:`Correlator.process` once per batch and partition,
:meth:`Correlator.advance_idle` about every second (naming the partitions with
records still on their way: those are not idle), :meth:`Correlator.drain_changes`
at each checkpoint (the entries go to the compacted changelog topic, changelog
partition == input partition) and :meth:`Correlator.restore` on assignment.
Semantics follow Kafka Streams (event-time windows, per-partition watermark =
max event time - allowed lateness, a window closes when the watermark reaches
``end + grace``); :mod:`stream.windows` documents each window type and rule.

Outputs are final by default: one record per closed window and group whose
condition holds. Because the watermark, the window contents and the
"already emitted" markers are all in the changelog, restoring from the last
checkpoint and replaying the events after it reproduces exactly the records
an uninterrupted run would have produced after that checkpoint.

Like every stage this one does no I/O. It does update two metrics, once per
batch and rule: ``stream_late_events_total{rule}`` (late events, whatever the
late policy) and ``stream_window_state_cap_hits_total{rule}`` (events refused
because ``max_keys`` live state entries exist) — only the engine knows which
rule an event was late for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Literal, NamedTuple

from stream.errors import ConfigError
from stream.fieldpaths import FieldResolver, single_getter
from stream.models import Correlation
from stream.observability import metrics
from stream.windows.compiled import CompiledRule, SequenceRule, compile_rule
from stream.windows.fields import ANY_FIELD
from stream.windows.partition import PartitionState
from stream.windows.rules import Rule
from stream.windows.spec import RESERVED_RULE_NAMES, RuleSpec, SessionWindow, TumblingWindow
from stream.windows.store import KeyBudget

LatePolicy = Literal["topic", "dlq", "drop"]


class LateFor(NamedTuple):
    """Why one event is late: the (first) rule it was late for and that window's end."""

    rule: str
    window_end: int


class CorrelateResult(NamedTuple):
    """Correlations produced by a batch, and the batch positions of late events.

    ``late_indices`` are positions in the ``events`` passed to ``process``, in
    ascending order, of events that were late for at least one rule they
    matched (they may still have counted for other rules); it is empty under
    ``late_policy="drop"`` (late events are still counted in the metric).
    ``late_for[k]`` names the rule and window ``late_indices[k]`` was late for
    (computed only when a batch has late events).
    """

    correlations: list[Correlation]
    late_indices: list[int]
    late_for: list[LateFor] = []


def late_window_end(rule: CompiledRule, event_time: int) -> int:
    """The end of the newest window of ``rule`` an event at ``event_time`` belongs to.

    An event is late when even that window had closed (``end + grace <= watermark``);
    for a session it is the end of the session the event would have started alone, for a
    sequence the end of the span it would have anchored.
    """
    if isinstance(rule, SequenceRule):
        return event_time + rule.within
    window = rule.window
    if isinstance(window, SessionWindow):
        return event_time + window.gap
    step = window.size if isinstance(window, TumblingWindow) else window.advance
    return event_time - event_time % step + window.size


class Correlator:
    """Runs a rule set over the batches of every assigned partition."""

    def __init__(
        self,
        rules: Sequence[RuleSpec | Rule],
        *,
        allowed_lateness_ms: int = 0,
        idle_timeout_ms: int = 30_000,
        late_policy: LatePolicy = "topic",
        max_keys: int = 1_000_000,
        sample_size: int = 5,
        fields: FieldResolver = ANY_FIELD,
        event_id: str | None = "event_id",
    ) -> None:
        if allowed_lateness_ms < 0:
            raise ConfigError("allowed_lateness_ms", "must be >= 0")
        if idle_timeout_ms <= 0:
            raise ConfigError("idle_timeout_ms", "must be > 0")
        if late_policy not in ("topic", "dlq", "drop"):
            raise ConfigError("late_policy", "must be topic, dlq or drop")
        if max_keys <= 0:
            raise ConfigError("max_keys", "must be > 0")
        if sample_size < 0:
            raise ConfigError("sample_size", "must be >= 0")
        self._rules: list[CompiledRule] = []
        for i, rule in enumerate(rules):
            try:
                self._rules.append(compile_rule(rule, fields))
            except ValueError as exc:
                raise ConfigError(f"correlate.rules[{i}]", str(exc)) from None
        if event_id is None:
            sample_size = 0  # nothing identifies an event: correlations carry no samples
            self._event_id: Callable[[Any], str] = str
        else:
            get_id = single_getter(fields, event_id, "event_id")
            self._event_id = lambda e: str(get_id(e))
        names = [rule.info.name for rule in self._rules]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError("rules", f"duplicate rule name {name!r}")
            if name in RESERVED_RULE_NAMES:
                raise ConfigError("rules", f"rule name {name!r} is reserved")
        self._names = names
        self._lateness = allowed_lateness_ms
        self._idle_timeout = idle_timeout_ms
        self.late_policy: LatePolicy = late_policy
        self._report_late = late_policy != "drop"
        self._sample_size = sample_size
        self._budget = KeyBudget(max_keys)
        self._partitions: dict[int, PartitionState] = {}
        self._late_metric = [metrics.late_events_total.labels(rule=name) for name in names]
        self._cap_metric = [metrics.window_state_cap_hits_total.labels(rule=name) for name in names]

    def _partition(self, partition: int) -> PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = PartitionState(
                self._rules,
                self._budget,
                lateness_ms=self._lateness,
                sample_size=self._sample_size,
                event_id=self._event_id,
            )
        return state

    def process(
        self,
        partition: int,
        events: Sequence[Any],
        event_times: Sequence[int],
        now_ms: int,
        offsets: Sequence[int] | None = None,
    ) -> CorrelateResult:
        """Fold one partition's batch (offset order) in; ``event_times[i]`` is ``events[i]``'s.

        ``offsets[i]``, when given, is the input offset of ``events[i]``: correlation
        records name the lowest and highest offset of the events they counted.
        """
        if not events:
            return CorrelateResult([], [])
        outcome = self._partition(partition).process(events, event_times, now_ms, offsets)
        for n, counter in zip(outcome.late_per_rule, self._late_metric, strict=True):
            if n:
                counter.inc(n)
        for n, counter in zip(outcome.refused_per_rule, self._cap_metric, strict=True):
            if n:
                counter.inc(n)
        if not outcome.late_positions or not self._report_late:
            return CorrelateResult(outcome.correlations, [])
        late = outcome.late_positions
        return CorrelateResult(
            outcome.correlations, late, self._late_for(late, outcome.late_by_rule, event_times)
        )

    def _late_for(
        self, late: list[int], by_rule: list[list[int]], times: Sequence[int]
    ) -> list[LateFor]:
        """Per late position, the first rule (in rule order) it was late for, and its window."""
        first: dict[int, int] = {}
        for r, positions in enumerate(by_rule):
            for i in positions:
                first.setdefault(i, r)
        rules = self._rules
        return [
            LateFor(rules[first[i]].info.name, late_window_end(rules[first[i]], times[i]))
            for i in late
        ]

    def advance_idle(self, now_ms: int, busy: Collection[int] = ()) -> list[Correlation]:
        """Let idle partitions' watermarks follow the wall clock; returns what that closed.

        ``busy``: partitions with records on their way to this stage (fetched, still
        queued between agents). They are not idle whatever the age of their last
        batch; their idle clock restarts now (see :mod:`stream.windows.clock`).
        """
        closed = self.advance_idle_by_partition(now_ms, busy)
        return [c for records in closed.values() for c in records]

    def advance_idle_by_partition(
        self, now_ms: int, busy: Collection[int] = ()
    ) -> dict[int, list[Correlation]]:
        """:meth:`advance_idle`, with the records grouped by the partition they belong to."""
        closed: dict[int, list[Correlation]] = {}
        for partition, state in self._partitions.items():
            out: list[Correlation] = []
            state.advance_idle(now_ms, self._idle_timeout, out, partition in busy)
            if out:
                closed[partition] = out
        return closed

    def hold_idle(self, partitions: Iterable[int], now_ms: int) -> None:
        """Restart the idle clock of ``partitions`` at ``now_ms`` (their last in-flight
        batch was just processed: idleness counts from here, not from its fetch)."""
        for partition in partitions:
            state = self._partitions.get(partition)
            if state is not None:
                state.clock.hold(now_ms)

    def drain_changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """Changelog entries changed since the last call: one per key, ``None`` = tombstone."""
        state = self._partitions.get(partition)
        return [] if state is None else state.drain()

    def restore(self, partition: int, entries: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Replace the partition's state with the changelog's (later entries win)."""
        self.drop_partition(partition)
        self._partition(partition).restore(entries)

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition's state (after the runner flushed it)."""
        state = self._partitions.pop(partition, None)
        if state is not None:
            state.clear()

    def stats(self) -> dict[str, int]:
        """``{rule name: live state entries, ..., "bytes": approximate state size}``."""
        totals = [0] * len(self._names)
        size = 0
        for state in self._partitions.values():
            for i, n in enumerate(state.keys_per_rule()):
                totals[i] += n
            size += state.approx_bytes()
        result = dict(zip(self._names, totals, strict=True))
        result["bytes"] = size
        return result
