"""Property test: the engine's final correlations equal a brute-force reference.

The reference below is deliberately naive. It replays each partition event by
event, computes the watermark after every event and idle tick, decides
lateness by looking at *all* windows an event could belong to, and at the end
recomputes every window's contents from scratch from the accepted events
(sessions by sorting and splitting at gaps; sequences by scanning all events
that arrived before the window's close). It shares no code with the engine
except the Event model and the rule specs, and reads event fields with plain
``getattr``.

Hypothesis generates out-of-order event streams over several partitions, cut
into random batches interleaved with idle ticks, and random rule parameters
for every rule kind and window type. The engine must emit exactly the
reference's final records, each in the call (batch or idle tick) at which the
reference's watermark first closes the window, and report exactly the
reference's late events.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.support.observability as obs
from stream.models import Correlation
from stream.observability import metrics
from stream.pipelines.observability import SEVERITY_RANK, Event
from stream.windows.rules import Rule
from stream.windows.spec import (
    AnomalyRuleSpec,
    HoppingWindow,
    RatioRuleSpec,
    RuleSpec,
    SequenceRuleSpec,
    SessionWindow,
    ThresholdRuleSpec,
    TumblingWindow,
    parse_rules,
)

SOURCES = ["a", "b"]
TYPES = ["deploy", "req", "job"]
SEVERITIES = list(SEVERITY_RANK)

# -- scenario generation -------------------------------------------------------------------------


@dataclass
class Scenario:
    partitions: list[list[Event]]
    #: ("batch", partition, count, now_ms) or ("idle", -1, 0, now_ms)
    ops: list[tuple[str, int, int, int]]
    lateness: int
    idle_timeout: int
    sample_size: int


@st.composite
def events_of(draw: st.DrawFn, partition: int, max_events: int) -> list[Event]:
    n = draw(st.integers(0, max_events))
    t = draw(st.integers(0, 400))
    events = []
    for i in range(n):
        t = max(0, t + draw(st.integers(-250, 300)))
        attributes = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"region": st.sampled_from(["eu", "us"]), "n": st.integers(0, 4)}
                ),
            )
        )
        events.append(
            Event(
                event_id=f"p{partition}-{i}",
                type=draw(st.sampled_from(TYPES)),
                source=draw(st.sampled_from(SOURCES)),
                timestamp=t,
                severity=draw(st.sampled_from(SEVERITIES)),
                entity=draw(st.one_of(st.none(), st.sampled_from(["u1", "u2"]))),
                value=draw(st.one_of(st.none(), st.integers(0, 20).map(float))),
                attributes=attributes,
            )
        )
    return events


@st.composite
def scenarios(draw: st.DrawFn, max_events: int = 36) -> Scenario:
    n_partitions = draw(st.integers(1, 3))
    partitions = [draw(events_of(p, max_events)) for p in range(n_partitions)]
    cursors = [0] * n_partitions
    ops: list[tuple[str, int, int, int]] = []
    now = 10_000
    while any(c < len(evs) for c, evs in zip(cursors, partitions, strict=True)):
        now += draw(st.integers(0, 600))
        p = draw(st.integers(-1, n_partitions - 1))
        if p < 0:
            ops.append(("idle", -1, 0, now))
            continue
        remaining = len(partitions[p]) - cursors[p]
        if remaining == 0:
            continue
        count = draw(st.integers(1, min(remaining, 12)))
        ops.append(("batch", p, count, now))
        cursors[p] += count
    for _ in range(draw(st.integers(0, 3))):
        now += draw(st.integers(0, 3_000))
        ops.append(("idle", -1, 0, now))
    return Scenario(
        partitions=partitions,
        ops=ops,
        lateness=draw(st.sampled_from([0, 0, 50, 200])),
        idle_timeout=draw(st.integers(300, 3_000)),
        sample_size=draw(st.integers(0, 4)),
    )


def window_strategy(window_type: str) -> st.SearchStrategy[dict[str, Any]]:
    grace = st.sampled_from([0, 0, 100, 300])
    if window_type == "tumbling":
        return st.builds(
            lambda size, g: {"type": "tumbling", "size": size, "grace": g},
            st.sampled_from([100, 250, 500, 1000]),
            grace,
        )
    if window_type == "hopping":
        return st.builds(
            lambda adv, mult, extra, g: {
                "type": "hopping",
                "size": adv * mult + extra,
                "advance": adv,
                "grace": g,
            },
            st.sampled_from([100, 150, 250]),
            st.integers(1, 4),
            st.sampled_from([0, 0, 30]),
            grace,
        )
    return st.builds(
        lambda gap, g: {"type": "session", "gap": gap, "grace": g},
        st.sampled_from([50, 150, 400]),
        grace,
    )


MATCHES = st.sampled_from(
    [
        {},
        {"severity": ["error", "critical"]},
        {"severity_at_least": "warning"},
        {"type": "req"},
        {"attributes.region": "eu"},
        {"source": "a", "type": ["req", "job"]},
    ]
)
GROUP_BYS = st.sampled_from(
    [[], ["source"], ["source", "entity"], ["attributes.region"], ["severity", "attributes.n"]]
)
CONDITIONS = st.builds(
    lambda op, bound: f"{op} {bound}",
    st.sampled_from([">=", ">", "<=", "<", "=="]),
    st.sampled_from([0, 1, 2, 3, 5, 10, 0.5]),
)
AGGREGATES = st.sampled_from(
    [
        "count",
        "sum(value)",
        "avg(value)",
        "min(value)",
        "max(value)",
        "distinct(entity)",
        "sum(attributes.n)",
        "distinct(attributes.region)",
    ]
)


@st.composite
def threshold_rule(draw: st.DrawFn, window_type: str) -> dict[str, Any]:
    return {
        "name": "thr",
        "kind": "threshold",
        "match": draw(MATCHES),
        "group_by": draw(GROUP_BYS),
        "window": draw(window_strategy(window_type)),
        "aggregate": draw(AGGREGATES),
        "when": draw(CONDITIONS),
    }


@st.composite
def ratio_rule(draw: st.DrawFn, window_type: str) -> dict[str, Any]:
    return {
        "name": "ratio",
        "kind": "ratio",
        "match": draw(st.sampled_from([{}, {"type": ["req", "job"]}])),
        "group_by": draw(GROUP_BYS),
        "window": draw(window_strategy(window_type)),
        "numerator": draw(st.sampled_from([{"severity_at_least": "error"}, {"source": "a"}])),
        "denominator": draw(st.sampled_from([{}, {"severity_at_least": "warning"}])),
        "when": draw(st.sampled_from(["> 0.3", ">= 0.5", "< 0.5", "== 1"])),
        "min_volume": draw(st.integers(1, 4)),
    }


@st.composite
def anomaly_rule(draw: st.DrawFn, window_type: str) -> dict[str, Any]:
    window_count = draw(st.integers(2, 5))
    return {
        "name": "anom",
        "kind": "anomaly",
        "match": draw(MATCHES),
        "group_by": draw(st.sampled_from([[], ["source"], ["attributes.region"]])),
        "window": draw(window_strategy(window_type)),
        "aggregate": draw(st.sampled_from(["count", "avg(value)", "max(value)"])),
        "k": draw(st.sampled_from([0.5, 1.0, 2.0])),
        "direction": draw(st.sampled_from(["both", "above", "below"])),
        "baseline_windows": window_count,
        "min_samples": draw(st.integers(2, window_count)),
        "min_stddev": draw(st.sampled_from([0.0, 0.0, 1.0])),
        "baseline_ttl": 10**9,
    }


@st.composite
def sequence_rule(draw: st.DrawFn, _window_type: str = "") -> dict[str, Any]:
    steps = [{"match": draw(st.sampled_from([{"type": "deploy"}, {"severity": "debug"}]))}]
    for _ in range(draw(st.integers(1, 2))):
        steps.append(
            {
                "match": draw(
                    st.sampled_from(
                        [{"severity_at_least": "error"}, {"type": "req"}, {"type": "deploy"}]
                    )
                ),
                "min_count": draw(st.integers(1, 3)),
            }
        )
    return {
        "name": "seq",
        "kind": "sequence",
        "match": draw(st.sampled_from([{}, {"source": "a"}])),
        "group_by": draw(st.sampled_from([[], ["source"], ["entity"]])),
        "steps": steps,
        "within": draw(st.sampled_from([200, 500, 1200])),
        "grace": draw(st.sampled_from([0, 100])),
    }


class SumIfPair(Rule):
    """Custom rule: [sum of value, events] per window; emits the sum when >= 2 events."""

    name = "custom"
    match = {"type": ["req", "job"]}
    group_by = ("source",)
    kind = "custom"
    aggregate = "sum-if-pair"

    def __init__(self, window: TumblingWindow | HoppingWindow | SessionWindow) -> None:
        type(self).window = window  # type: ignore[misc]

    def initial(self) -> list[float]:
        return [0.0, 0]

    def add(self, state: Any, event: Event, event_time: int) -> Any:
        state[0] += event.value or 0.0
        state[1] += 1
        return state

    def merge(self, left: Any, right: Any) -> Any:
        return [left[0] + right[0], left[1] + right[1]]

    def result(self, state: Any, count: int) -> float | None:
        return float(state[0]) if state[1] >= 2 else None


# -- the reference -------------------------------------------------------------------------------


@dataclass
class Step:
    """One point of a partition's timeline: an event, or an idle tick."""

    op: int
    watermark: int  # after this step
    event: Event | None
    t: int
    seq: int


def timelines(sc: Scenario) -> tuple[dict[int, list[Step]], int]:
    lines: dict[int, list[Step]] = {p: [] for p in range(len(sc.partitions))}
    state = {p: {"max": None, "wm": None, "base": None, "wall": None, "seq": 0} for p in lines}
    cursors = [0] * len(sc.partitions)
    for k, (kind, p, count, now) in enumerate(sc.ops):
        if kind == "batch":
            s = state[p]
            for event in sc.partitions[p][cursors[p] : cursors[p] + count]:
                t = event.event_time_ms()
                s["max"] = t if s["max"] is None else max(s["max"], t)
                candidate = s["max"] - sc.lateness
                s["wm"] = candidate if s["wm"] is None else max(s["wm"], candidate)
                lines[p].append(Step(k, s["wm"], event, t, s["seq"]))
                s["seq"] += 1
            cursors[p] += count
            s["base"], s["wall"] = s["wm"], now
        else:
            for q, s in state.items():
                if s["max"] is None or now - s["wall"] < sc.idle_timeout:
                    continue
                if s["base"] + (now - s["wall"]) > s["wm"]:
                    s["wm"] = s["base"] + (now - s["wall"])
                    lines[q].append(Step(k, s["wm"], None, 0, -1))
    return lines, len(sc.ops)


def field(event: Event, path: str) -> Any:
    if path.startswith("attributes."):
        return (event.attributes or {}).get(path.removeprefix("attributes."))
    return getattr(event, path)


def matches(event: Event, match: dict[str, Any]) -> bool:
    for path, expected in match.items():
        if path == "severity_at_least":
            if SEVERITY_RANK[event.severity] < SEVERITY_RANK[expected]:
                return False
            continue
        actual = field(event, path)
        options = expected if isinstance(expected, list) else [expected]
        if actual is None or actual not in options:
            return False
    return True


def group_of(event: Event, group_by: Sequence[str]) -> Hashable | None:
    values = tuple(field(event, f) for f in group_by)
    return None if any(v is None for v in values) else values


def close_op(line: list[Step], due: int) -> int | None:
    """The op at which the partition's watermark first reaches ``due``, or None."""
    index = close_position(line, due)
    return None if index is None else line[index].op


def close_position(line: list[Step], due: int) -> int | None:
    for index, step in enumerate(line):
        if step.watermark >= due:
            return index
    return None


@dataclass
class Window:
    start: int
    end: int
    due: int
    events: list[Step]


def rule_events(rule: Any, line: list[Step]) -> list[tuple[int, Step, Hashable]]:
    """(timeline index, step, group) of the events a windowed rule considers."""
    out = []
    for index, step in enumerate(line):
        event = step.event
        if event is None or not matches(event, rule.match):
            continue
        group = group_of(event, rule.group_by)
        if group is None:
            continue
        if isinstance(rule, ThresholdRuleSpec | AnomalyRuleSpec):
            agg = rule.aggregate
            if agg.field is not None:
                value = field(event, agg.field)
                if agg.function == "distinct":
                    if value is None:
                        continue
                elif type(value) not in (int, float):
                    continue
        if (
            isinstance(rule, RatioRuleSpec)
            and rule.denominator
            and not (matches(event, rule.numerator) or matches(event, rule.denominator))
        ):
            continue
        out.append((index, step, group))
    return out


def fixed_windows(rule: Any, line: list[Step], late: set[int]) -> dict[Hashable, list[Window]]:
    window = rule.window
    advance = window.advance if isinstance(window, HoppingWindow) else window.size
    windows: dict[tuple[Hashable, int], Window] = {}
    for _, step, group in rule_events(rule, line):
        t = step.t
        starts = [s for s in range(0, t + 1, advance) if s <= t < s + window.size]
        open_starts = [s for s in starts if s + window.size + window.grace > step.watermark]
        if not open_starts:
            late.add(step.seq)
            continue
        for s in open_starts:
            w = windows.setdefault(
                (group, s), Window(s, s + window.size, s + window.size + window.grace, [])
            )
            w.events.append(step)
    by_group: dict[Hashable, list[Window]] = defaultdict(list)
    for (group, _), w in windows.items():
        by_group[group].append(w)
    return by_group


def components(steps: list[Step], gap: int) -> list[list[Step]]:
    runs: list[list[Step]] = []
    for step in sorted(steps, key=lambda s: s.t):
        if runs and step.t < max(s.t for s in runs[-1]) + gap:
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def session_windows(rule: Any, line: list[Step], late: set[int]) -> dict[Hashable, list[Window]]:
    gap, grace = rule.window.gap, rule.window.grace
    accepted: dict[Hashable, list[Step]] = defaultdict(list)
    for _, step, group in rule_events(rule, line):
        t, wm = step.t, step.watermark
        runs = components(accepted[group], gap)
        touching = [
            r for r in runs if t < max(s.t for s in r) + gap and min(s.t for s in r) < t + gap
        ]
        closed = [r for r in touching if max(s.t for s in r) + gap + grace <= wm]
        if t + gap + grace <= wm or closed:
            late.add(step.seq)
            continue
        accepted[group].append(step)
    result: dict[Hashable, list[Window]] = {}
    for group, steps in accepted.items():
        result[group] = []
        for run in components(steps, gap):
            start, last = min(s.t for s in run), max(s.t for s in run)
            result[group].append(Window(start, last + gap, last + gap + grace, run))
    return result


def aggregate(rule: Any, events: list[Step]) -> float:
    if isinstance(rule, RatioRuleSpec):
        den = [s for s in events if not rule.denominator or matches(s.event, rule.denominator)]
        num = [s for s in events if matches(s.event, rule.numerator)]
        return len(num) / len(den) if den else math.nan
    function, name = rule.aggregate.function, rule.aggregate.field
    values = [field(s.event, name) for s in events] if name else []
    if function == "count":
        return float(len(events))
    if function == "sum":
        return float(sum(values))
    if function == "avg":
        return float(sum(values)) / len(values)
    if function == "min":
        return float(min(values))
    if function == "max":
        return float(max(values))
    return float(len(set(values)))


def deviates(rule: AnomalyRuleSpec, baseline: list[float], x: float) -> bool:
    if len(baseline) < rule.min_samples:
        return False
    mean = statistics.fmean(baseline)
    limit = rule.k * max(statistics.pstdev(baseline), rule.min_stddev)
    if rule.direction == "above":
        return x - mean > limit
    if rule.direction == "below":
        return mean - x > limit
    return abs(x - mean) > limit


def record(
    rule: Any,
    group: Hashable,
    start: int,
    end: int,
    value: float,
    events: list[Step],
    sample_size: int,
    *,
    name: str,
    kind: str,
    aggregate_name: str,
    samples: list[Step] | None = None,
) -> Correlation:
    if samples is None:
        samples = sorted(events, key=lambda s: s.seq)
    group_by = rule.group_by
    return Correlation(
        rule=name,
        kind=kind,
        group={f: str(v) for f, v in zip(group_by, group, strict=True)},  # type: ignore[arg-type]
        window_start=start,
        window_end=end,
        aggregate=aggregate_name,
        value=value,
        count=len(events),
        first_event_time=min(s.t for s in events),
        last_event_time=max(s.t for s in events),
        sample_event_ids=[s.event.event_id for s in samples[:sample_size]],  # type: ignore[union-attr]
    )


def reference_windowed(
    rule: Any, line: list[Step], sample_size: int, late: set[int]
) -> list[tuple[int, Correlation]]:
    if isinstance(rule.window, SessionWindow):
        groups = session_windows(rule, line, late)
    else:
        groups = fixed_windows(rule, line, late)
    out = []
    for group, windows in groups.items():
        baseline: list[float] = []
        for w in sorted(windows, key=lambda w: w.end):
            op = close_op(line, w.due)
            if op is None:
                continue
            if isinstance(rule, SumIfPair):
                if len(w.events) < 2:
                    continue
                value = float(sum(s.event.value or 0.0 for s in w.events))  # type: ignore[union-attr]
                out.append(
                    (
                        op,
                        record(
                            rule,
                            group,
                            w.start,
                            w.end,
                            value,
                            w.events,
                            sample_size,
                            name="custom",
                            kind="custom",
                            aggregate_name="sum-if-pair",
                        ),
                    )
                )
                continue
            x = aggregate(rule, w.events)
            if isinstance(rule, AnomalyRuleSpec):
                flagged = deviates(rule, baseline[-rule.baseline_windows :], x)
                baseline.append(x)
                if not flagged:
                    continue
            elif isinstance(rule, RatioRuleSpec):
                den = sum(
                    1
                    for s in w.events
                    if not rule.denominator or matches(s.event, rule.denominator)
                )
                if den < rule.min_volume or not rule.when.holds(x):
                    continue
            elif not rule.when.holds(x):
                continue
            out.append(
                (
                    op,
                    record(
                        rule,
                        group,
                        w.start,
                        w.end,
                        x,
                        w.events,
                        sample_size,
                        name=rule.name,
                        kind=rule.kind,
                        aggregate_name="ratio"
                        if isinstance(rule, RatioRuleSpec)
                        else str(rule.aggregate),
                    ),
                )
            )
    return out


def reference_sequence(
    rule: SequenceRuleSpec, line: list[Step], sample_size: int, late: set[int]
) -> list[tuple[int, Correlation]]:
    horizon = rule.within + rule.grace
    accepted: list[tuple[int, Step, Hashable]] = []
    for index, step in enumerate(line):
        event = step.event
        if event is None or not matches(event, rule.match):
            continue
        if not any(matches(event, s.match) for s in rule.steps):
            continue
        group = group_of(event, rule.group_by)
        if group is None:
            continue
        if step.t + horizon <= step.watermark:
            late.add(step.seq)
            continue
        accepted.append((index, step, group))
    out = []
    for _, anchor, group in accepted:
        if not matches(anchor.event, rule.steps[0].match):  # type: ignore[arg-type]
            continue
        closed_at = close_position(line, anchor.t + horizon)
        if closed_at is None:
            continue
        a, end = anchor.t, anchor.t + rule.within
        seen = [s for i, s, g in accepted if g == group and i < closed_at]
        after = (a, anchor.seq)
        involved = {anchor.seq: anchor}
        candidates: list[Step] = []
        for spec in rule.steps[1:]:
            candidates = sorted(
                (
                    s
                    for s in seen
                    if matches(s.event, spec.match)
                    and a <= s.t < end  # type: ignore[arg-type]
                    and (s.t, s.seq) > after
                ),
                key=lambda s: (s.t, s.seq),
            )
            if len(candidates) < spec.min_count:
                break
            after = (candidates[spec.min_count - 1].t, candidates[spec.min_count - 1].seq)
            involved.update({s.seq: s for s in candidates})
        else:
            ordered = sorted(involved.values(), key=lambda s: (s.t, s.seq))
            out.append(
                (
                    line[closed_at].op,
                    record(
                        rule,
                        group,
                        a,
                        end,
                        float(len(candidates)),
                        ordered,
                        sample_size,
                        name=rule.name,
                        kind="sequence",
                        aggregate_name="sequence",
                        samples=ordered,
                    ),
                )
            )
    return out


def reference(
    rules: Sequence[Any], sc: Scenario
) -> tuple[list[tuple[int, Correlation]], set[tuple[int, int]], dict[str, int]]:
    lines, _ = timelines(sc)
    expected: list[tuple[int, Correlation]] = []
    late_events: set[tuple[int, int]] = set()
    late_counts: dict[str, int] = {}
    for rule in rules:
        late_counts[rule.name] = 0
        for p, line in lines.items():
            late: set[int] = set()
            if isinstance(rule, SequenceRuleSpec):
                expected += reference_sequence(rule, line, sc.sample_size, late)
            else:
                expected += reference_windowed(rule, line, sc.sample_size, late)
            late_counts[rule.name] += len(late)
            late_events |= {(p, seq) for seq in late}
    return expected, late_events, late_counts


# -- running the engine --------------------------------------------------------------------------


def late_metric(name: str) -> float:
    return metrics.late_events_total.labels(rule=name)._value.get()  # type: ignore[attr-defined,no-any-return]


def run_engine(
    rules: Sequence[RuleSpec | Rule], sc: Scenario
) -> tuple[list[tuple[int, Correlation]], set[tuple[int, int]], dict[str, int]]:
    before = {r.name: late_metric(r.name) for r in rules}
    engine = obs.correlator(
        rules,
        allowed_lateness_ms=sc.lateness,
        idle_timeout_ms=sc.idle_timeout,
        sample_size=sc.sample_size,
    )
    emitted: list[tuple[int, Correlation]] = []
    late: set[tuple[int, int]] = set()
    cursors = [0] * len(sc.partitions)
    for k, (kind, p, count, now) in enumerate(sc.ops):
        if kind == "idle":
            emitted += [(k, c) for c in engine.advance_idle(now)]
            continue
        events = sc.partitions[p][cursors[p] : cursors[p] + count]
        result = engine.process(p, events, [e.event_time_ms() for e in events], now)
        emitted += [(k, c) for c in result.correlations]
        late |= {(p, cursors[p] + i) for i in result.late_indices}
        cursors[p] += count
    counts = {r.name: int(late_metric(r.name) - before[r.name]) for r in rules}
    assert all(c.final for _, c in emitted)
    return emitted, late, counts


def canonical(records: list[tuple[int, Correlation]]) -> list[tuple[Any, ...]]:
    rows = []
    for op, c in records:
        row = msgspec.to_builtins(c)
        value = row.pop("value")
        rows.append((op, repr(sorted(row.items())), round(value, 9)))
    return sorted(rows)


def check(rules: Sequence[Any], engine_rules: Sequence[Any], sc: Scenario) -> None:
    expected, expected_late, expected_counts = reference(rules, sc)
    emitted, late, counts = run_engine(engine_rules, sc)
    assert canonical(emitted) == canonical(expected)
    assert late == expected_late
    assert counts == expected_counts


#: Examples per property; raise it for a deeper run, e.g. STREAM_PROPERTY_EXAMPLES=1000.
EXAMPLES = int(os.environ.get("STREAM_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RULE_KINDS = {"threshold": threshold_rule, "ratio": ratio_rule, "anomaly": anomaly_rule}


@pytest.mark.parametrize("window_type", ["tumbling", "hopping", "session"])
@pytest.mark.parametrize("kind", sorted(RULE_KINDS))
def test_windowed_rules_match_reference(kind: str, window_type: str) -> None:
    @PROPERTY
    @given(sc=scenarios(), raw=RULE_KINDS[kind](window_type))
    def prop(sc: Scenario, raw: dict[str, Any]) -> None:
        rules = parse_rules([raw])
        check(rules, rules, sc)

    prop()


@PROPERTY
@given(sc=scenarios(), raw=sequence_rule())
def test_sequence_rules_match_reference(sc: Scenario, raw: dict[str, Any]) -> None:
    rules = parse_rules([raw])
    check(rules, rules, sc)


@pytest.mark.parametrize("window_type", ["tumbling", "hopping", "session"])
def test_custom_rules_match_reference(window_type: str) -> None:
    @PROPERTY
    @given(sc=scenarios(), window=window_strategy(window_type))
    def prop(sc: Scenario, window: dict[str, Any]) -> None:
        spec = parse_rules([{"name": "x", "kind": "threshold", "window": window, "when": ">0"}])
        assert isinstance(spec[0], ThresholdRuleSpec)
        rule = SumIfPair(spec[0].window)
        check([rule], [rule], sc)

    prop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sc=scenarios(),
    thr=threshold_rule("hopping"),
    ses=ratio_rule("session"),
    anom=anomaly_rule("tumbling"),
    seq=sequence_rule(),
)
def test_rule_sets_match_reference(
    sc: Scenario,
    thr: dict[str, Any],
    ses: dict[str, Any],
    anom: dict[str, Any],
    seq: dict[str, Any],
) -> None:
    """Several rules in one engine: late events are the union over the rules."""
    rules = parse_rules([thr, ses, anom, seq])
    check(rules, rules, sc)
