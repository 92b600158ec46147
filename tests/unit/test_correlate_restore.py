"""Crash/restore equivalence: changelog + replay after the checkpoint == uninterrupted run.

A run is cut by random checkpoints (``drain_changes`` of every partition,
appended to a per-partition changelog) and random crashes. A crash throws the
engine away, builds a new one, restores every partition from the changelog
(raw, or compacted to the last value per key as Kafka would) and replays the
operations after the last checkpoint. For every operation, the output of its
last execution — final and early records, late positions — must equal the
output of the same operation in an uninterrupted run.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.support.observability as obs
from stream.models import Correlation
from stream.pipelines.observability import Event
from stream.stages.correlate import Correlator
from stream.windows.rules import Rule
from stream.windows.spec import SessionWindow, parse_rules

RULES = parse_rules(
    [
        {
            "name": "burst",
            "kind": "threshold",
            "match": {"severity_at_least": "error"},
            "group_by": ["source"],
            "window": {"type": "tumbling", "size": 500, "grace": 100},
            "when": ">= 2",
            "emit_early": True,
        },
        {
            "name": "hop-sum",
            "kind": "threshold",
            "group_by": ["source"],
            "window": {"type": "hopping", "size": 600, "advance": 200},
            "aggregate": "sum(value)",
            "when": "> 10",
        },
        {
            "name": "users",
            "kind": "threshold",
            "window": {"type": "session", "gap": 150, "grace": 50},
            "aggregate": "distinct(entity)",
            "when": ">= 2",
            "emit_early": True,
        },
        {
            "name": "err-ratio",
            "kind": "ratio",
            "group_by": ["attributes.region"],
            "window": {"type": "session", "gap": 300},
            "numerator": {"severity_at_least": "error"},
            "when": ">= 0.5",
            "min_volume": 2,
        },
        {
            "name": "spike",
            "kind": "anomaly",
            "group_by": ["source"],
            "window": {"type": "tumbling", "size": 200},
            "aggregate": "count",
            "k": 1.0,
            "baseline_windows": 4,
            "min_samples": 2,
        },
        {
            "name": "deploy-errors",
            "kind": "sequence",
            "group_by": ["source"],
            "steps": [{"match": {"type": "deploy"}}, {"match": {"severity": "error"}}],
            "within": 800,
            "grace": 100,
            "emit_early": True,
        },
    ]
)


class SessionValueSum(Rule):
    name = "custom-sum"
    window = SessionWindow(type="session", gap=200)
    group_by = ("source",)
    aggregate = "sum(value)"

    def initial(self) -> float:
        return 0.0

    def add(self, state: Any, event: Event, event_time: int) -> Any:
        return state + (event.value or 0.0)

    def merge(self, left: Any, right: Any) -> Any:
        return left + right

    def result(self, state: Any, count: int) -> float | None:
        return float(state) if count >= 3 else None


ALL_RULES = [*RULES, SessionValueSum()]


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[Event]], list[tuple[int, int]]]:
    partitions: list[list[Event]] = []
    for p in range(draw(st.integers(1, 3))):
        t = draw(st.integers(0, 300))
        events = []
        for i in range(draw(st.integers(0, 50))):
            t = max(0, t + draw(st.integers(-200, 200)))
            events.append(
                Event(
                    event_id=f"p{p}-{i}",
                    type=draw(st.sampled_from(["deploy", "req", "req"])),
                    source=draw(st.sampled_from(["a", "b"])),
                    timestamp=t,
                    severity=draw(st.sampled_from(["info", "warning", "error", "critical"])),
                    entity=draw(st.sampled_from([None, "u1", "u2", "u3"])),
                    value=float(draw(st.integers(0, 9))),
                    attributes=draw(st.sampled_from([None, {"region": "eu"}, {"region": "us"}])),
                )
            )
        partitions.append(events)
    ops: list[tuple[int, int]] = []
    cursors = [0] * len(partitions)
    while any(c < len(e) for c, e in zip(cursors, partitions, strict=True)):
        p = draw(st.integers(0, len(partitions) - 1))
        remaining = len(partitions[p]) - cursors[p]
        if remaining:
            count = draw(st.integers(1, min(10, remaining)))
            ops.append((p, count))
            cursors[p] += count
    return partitions, ops


Output = tuple[list[Any], list[int]]


def run_op(
    engine: Correlator, partitions: list[list[Event]], ops: list[tuple[int, int]], k: int
) -> Output:
    p, count = ops[k]
    start = sum(c for q, c in ops[:k] if q == p)
    events = partitions[p][start : start + count]
    result = engine.process(p, events, [e.event_time_ms() for e in events], 0)
    return [_plain(c) for c in result.correlations], result.late_indices


def _plain(c: Correlation) -> Any:
    return msgspec.to_builtins(c)


def new_engine() -> Correlator:
    return obs.correlator(ALL_RULES, allowed_lateness_ms=20, sample_size=3)


@settings(
    max_examples=int(os.environ.get("STREAM_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(scenario=streams(), data=st.data())
def test_restore_then_replay_equals_uninterrupted(
    scenario: tuple[list[list[Event]], list[tuple[int, int]]], data: st.DataObject
) -> None:
    partitions, ops = scenario
    reference = new_engine()
    expected = [run_op(reference, partitions, ops, k) for k in range(len(ops))]

    engine = new_engine()
    changelog: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in range(len(partitions))}
    last: dict[int, Output] = {}
    durable = 0  # ops before this index are covered by the changelog
    crashes = data.draw(st.integers(0, 3), label="crashes")
    k = 0
    while k < len(ops):
        last[k] = run_op(engine, partitions, ops, k)
        k += 1
        if data.draw(st.booleans(), label="checkpoint"):
            for p, log in changelog.items():
                drained = engine.drain_changes(p)
                keys = [key for key, _ in drained]
                assert len(keys) == len(set(keys)), "one entry per key per drain"
                log.extend(drained)
            durable = k
        if crashes and data.draw(st.booleans(), label="crash"):
            crashes -= 1
            compacted = data.draw(st.booleans(), label="compacted")
            engine = new_engine()
            for p, log in changelog.items():
                engine.restore(p, list(dict(log).items()) if compacted else log)
            k = durable
    assert [last[k] for k in range(len(ops))] == expected
    assert engine.stats() == reference.stats()


def test_restore_rebuilds_state_exactly() -> None:
    """Restoring what was drained gives a state that drains to the same entries."""
    engine = new_engine()
    events = [
        Event(
            event_id=f"e{i}",
            type="deploy" if i % 7 == 0 else "req",
            source="ab"[i % 2],
            timestamp=100 + 37 * i,
            severity="error" if i % 3 else "info",
            entity=f"u{i % 3}",
            value=float(i % 5),
            attributes={"region": "eu"},
        )
        for i in range(40)
    ]
    engine.process(0, events, [e.event_time_ms() for e in events], 0)
    drained = dict(engine.drain_changes(0))
    assert drained and None not in drained.values()

    restored = new_engine()
    restored.restore(0, list(drained.items()))
    assert restored.drain_changes(0) == []  # nothing changed since the checkpoint
    assert restored.stats() == engine.stats()
    # fold the same late-batch events into both: every touched entry re-encodes identically
    more = [msgspec.structs.replace(e, event_id=f"x{i}") for i, e in enumerate(events[-8:])]
    times = [e.event_time_ms() for e in more]
    assert engine.process(0, more, times, 0) == restored.process(0, more, times, 0)
    again = dict(engine.drain_changes(0))
    assert len(again) > 3
    assert dict(restored.drain_changes(0)) == again
