"""Concrete behaviour of the correlate stage: one scenario per rule of the semantics."""

from __future__ import annotations

from typing import Any

import pytest

import tests.support.observability as obs
from stream.errors import ConfigError
from stream.models import Correlation
from stream.observability import metrics
from stream.pipelines.observability import Event
from stream.stages.correlate import Correlator
from stream.windows.changelog import decode
from stream.windows.rules import Rule
from stream.windows.spec import DEFAULT_RULES, TumblingWindow, parse_rules

MIN = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MIN  # a minute boundary


def ev(
    i: int | str, t: int, *, source: str = "api", severity: str = "error", **fields: Any
) -> Event:
    base: dict[str, Any] = {"type": "request", **fields}
    return Event(
        event_id=str(i),
        source=source,
        timestamp=t,
        severity=severity,  # type: ignore[arg-type]
        **base,
    )


def feed(
    engine: Correlator, events: list[Event], *, partition: int = 0, now: int = 0
) -> tuple[list[Correlation], list[int]]:
    result = engine.process(partition, events, [e.event_time_ms() for e in events], now)
    return result.correlations, result.late_indices


def counter(metric: Any, rule: str) -> float:
    return float(metric.labels(rule=rule)._value.get())


# -- the default rule ----------------------------------------------------------------------------


def test_error_burst_emits_one_final_record_when_the_window_closes() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    burst = [ev(f"e{i}", T0 + 1_000 * i) for i in range(6)]
    noise = [ev("i1", T0 + 500, severity="info"), ev("w1", T0 + 600, severity="warning")]
    other = [ev(f"o{i}", T0 + 2_000 + i, source="db") for i in range(4)]  # only 4: below 5
    out, late = feed(engine, burst + noise + other)
    assert out == [] and late == []
    # watermark T0 + 69_999 < end + grace (T0 + 70_000): still open
    out, _ = feed(engine, [ev("x", T0 + 69_999, severity="info")])
    assert out == []
    out, _ = feed(engine, [ev("y", T0 + 70_000, severity="info")])
    assert out == [
        Correlation(
            rule="error-burst",
            kind="threshold",
            group={"source": "api"},
            window_start=T0,
            window_end=T0 + MIN,
            aggregate="count",
            value=6.0,
            count=6,
            first_event_time=T0,
            last_event_time=T0 + 5_000,
            sample_event_ids=["e0", "e1", "e2", "e3", "e4"],
            final=True,
        )
    ]
    # nothing is emitted twice, and events for the closed window are late
    out, late = feed(engine, [ev("z", T0 + 10, severity="critical")])
    assert out == [] and late == [0]


def test_grace_accepts_out_of_order_events_until_it_runs_out() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(4)])
    feed(engine, [ev("next-window", T0 + MIN + 5_000, severity="info")])
    out, late = feed(engine, [ev("straggler", T0 + 30_000)])  # 5th, within grace
    assert late == [] and out == []
    out, late = feed(engine, [ev("closer", T0 + MIN + 10_000, severity="info")])
    assert [(c.count, c.sample_event_ids[-1]) for c in out] == [(5, "straggler")]


def test_lateness_is_decided_per_event_position_in_the_batch() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    batch = [
        ev("a", T0 + 1),  # window [T0, T0+60s) open
        ev("jump", T0 + MIN + 10_000, severity="info"),  # watermark closes it
        ev("b", T0 + 2),  # late: after the jump in the same batch
    ]
    _, late = feed(engine, batch)
    assert late == [2]


def test_allowed_lateness_holds_the_watermark_back() -> None:
    engine = obs.correlator(DEFAULT_RULES, allowed_lateness_ms=5_000)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(5)])
    out, _ = feed(engine, [ev("w", T0 + 74_999, severity="info")])
    assert out == []
    out, _ = feed(engine, [ev("w2", T0 + 75_000, severity="info")])
    assert len(out) == 1


def test_partitions_have_independent_watermarks() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(5)], partition=0)
    out, _ = feed(engine, [ev("far", T0 + 10 * MIN, severity="info")], partition=1)
    assert out == []  # partition 1's watermark does not close partition 0's windows
    out, late = feed(engine, [ev(f"p1-{i}", T0 + i) for i in range(5)], partition=1)
    assert out == [] and late == [0, 1, 2, 3, 4]


# -- late policy, metrics, cap -------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["dlq", "drop"])
def test_late_events_are_counted_and_reported_per_policy(policy: str) -> None:
    rules = parse_rules(
        [
            {
                "name": f"late-{policy}",
                "kind": "threshold",
                "match": {"severity": "error"},
                "window": {"type": "tumbling", "size": 1_000},
                "when": ">= 1",
            }
        ]
    )
    engine = obs.correlator(rules, late_policy=policy)  # type: ignore[arg-type]
    before = counter(metrics.late_events_total, f"late-{policy}")
    feed(engine, [ev("a", 5_000)])
    _, late = feed(
        engine,
        [ev("ok", 5_999), ev("late1", 4_999), ev("info", 1, severity="info"), ev("late2", 10)],
    )
    assert late == ([1, 3] if policy == "dlq" else [])
    # the info event matches no rule, so it is not late for anything
    assert counter(metrics.late_events_total, f"late-{policy}") - before == 2


def test_max_keys_caps_live_entries_and_counts_refused_events() -> None:
    rules = parse_rules(
        [
            {
                "name": "capped",
                "kind": "threshold",
                "match": {"severity": "error"},
                "group_by": ["source"],
                "window": {"type": "tumbling", "size": 1_000},
                "when": ">= 1",
            }
        ]
    )
    engine = obs.correlator(rules, max_keys=2)
    before = counter(metrics.window_state_cap_hits_total, "capped")
    events = [ev(f"{s}{i}", 100 + i, source=s) for i in range(3) for s in "abc"]
    out, late = feed(engine, events)
    assert out == [] and late == []
    assert engine.stats()["capped"] == 2
    assert counter(metrics.window_state_cap_hits_total, "capped") - before == 3  # c0, c1, c2
    # closing [0, 1000) frees both keys (windows close at the end of the batch)
    out, _ = feed(engine, [ev("tick", 1_000, severity="info")])
    assert sorted((c.group["source"], c.count) for c in out) == [("a", 3), ("b", 3)]
    assert engine.stats()["capped"] == 0
    feed(engine, [ev("a-next", 1_001, source="a"), ev("c-next", 1_001, source="c")])
    assert engine.stats()["capped"] == 2


# -- idle partitions -----------------------------------------------------------------------------


def test_idle_partition_closes_windows_on_wall_clock_time() -> None:
    engine = obs.correlator(DEFAULT_RULES, idle_timeout_ms=30_000)
    wall = 1_000_000
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(5)], now=wall)  # watermark T0 + 4
    assert engine.advance_idle(wall + 29_999) == []  # not idle yet
    # idle: watermark = T0 + 4 + elapsed; closes at T0 + 70_000
    assert engine.advance_idle(wall + 30_000) == []
    assert engine.advance_idle(wall + 69_995) == []
    (closed,) = engine.advance_idle(wall + 69_996)
    assert (closed.window_start, closed.count, closed.final) == (T0, 5, True)
    # the advanced watermark is durable state: events for the closed window are now late
    _, late = feed(engine, [ev("late", T0 + 100)], now=wall + 70_000)
    assert late == [0]


def test_new_events_restart_the_idle_clock() -> None:
    engine = obs.correlator(DEFAULT_RULES, idle_timeout_ms=10_000)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(5)], now=0)
    feed(engine, [ev("still-alive", T0 + 5, severity="info")], now=9_000)
    assert engine.advance_idle(18_999) == []
    assert engine.advance_idle(78_990) == []  # watermark T0 + 5 + 69_990
    assert len(engine.advance_idle(78_995)) == 1


def test_restored_partition_restarts_its_idle_clock() -> None:
    engine = obs.correlator(DEFAULT_RULES, idle_timeout_ms=10_000)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(5)], now=0)
    changelog = engine.drain_changes(0)
    restored = obs.correlator(DEFAULT_RULES, idle_timeout_ms=10_000)
    restored.restore(0, changelog)
    # hours later: events may have piled up in Kafka, so do not jump the watermark yet
    assert restored.advance_idle(10_000_000) == []
    assert restored.advance_idle(10_069_995) == []
    assert len(restored.advance_idle(10_069_996)) == 1


# -- early results -------------------------------------------------------------------------------


def test_emit_early_reports_once_when_the_condition_first_holds() -> None:
    raw = DEFAULT_RULES[0].model_dump()
    raw["emit_early"] = True
    engine = obs.correlator(parse_rules([raw]))
    out, _ = feed(engine, [ev(f"e{i}", T0 + i) for i in range(4)])
    assert out == []
    out, _ = feed(engine, [ev("e4", T0 + 4), ev("e5", T0 + 5)])
    assert [(c.final, c.count, c.value) for c in out] == [(False, 5, 5.0)]
    out, _ = feed(engine, [ev("e6", T0 + 6), ev("close", T0 + 70_000, severity="info")])
    assert [(c.final, c.count) for c in out] == [(True, 7)]


# -- window types --------------------------------------------------------------------------------


def _rule(**fields: Any) -> Any:
    base = {"name": "r", "kind": "threshold", "when": ">= 1"}
    base.update(fields)
    return parse_rules([base])


def test_hopping_windows_count_an_event_in_every_window_holding_it() -> None:
    engine = obs.correlator(
        _rule(window={"type": "hopping", "size": 300, "advance": 100}, aggregate="sum(value)")
    )
    out, _ = feed(engine, [ev("a", 1_250, value=2.0), ev("b", 1_320, value=3.0)])
    assert [c.window_start for c in out] == [1_000]  # closed by the watermark 1_320
    out += feed(engine, [ev("close", 5_000, value=0.0)])[0]
    got = sorted((c.window_start, c.window_end, c.value, c.count) for c in out)
    assert got == [
        (1_000, 1_300, 2.0, 1),
        (1_100, 1_400, 5.0, 2),
        (1_200, 1_500, 5.0, 2),
        (1_300, 1_600, 3.0, 1),
    ]


def test_session_windows_merge_when_an_event_bridges_the_gap() -> None:
    engine = obs.correlator(
        _rule(window={"type": "session", "gap": 100, "grace": 200}, group_by=["source"])
    )
    feed(engine, [ev("a", 1_000), ev("c", 1_180)])  # two sessions: 180 >= 100 apart
    feed(engine, [ev("b", 1_090)])  # within 100 of both: one session
    out, _ = feed(engine, [ev("d", 1_480, source="other")])  # 1_280 + grace
    assert [(c.window_start, c.window_end, c.count, c.sample_event_ids) for c in out] == [
        (1_000, 1_280, 3, ["a", "c", "b"])
    ]


def test_session_event_joining_a_closed_session_is_late() -> None:
    engine = obs.correlator(_rule(window={"type": "session", "gap": 100}))
    feed(engine, [ev("a", 1_000)])
    out, _ = feed(engine, [ev("far", 1_100, source="x", severity="info", type="other")])
    assert [c.count for c in out] == [1]  # [1000, 1100) closed at watermark 1100
    # 1_050 on its own would be open until 1_150, but it would extend the emitted session
    _, late = feed(engine, [ev("b", 1_050)])
    assert late == [0]


def test_sequence_needs_the_steps_in_event_time_order_within_the_span() -> None:
    rules = parse_rules(
        [
            {
                "name": "deploy-then-errors",
                "kind": "sequence",
                "group_by": ["source"],
                "steps": [
                    {"match": {"type": "deploy"}},
                    {"match": {"severity": "error"}, "min_count": 3},
                ],
                "within": "5m",
            }
        ]
    )
    engine = obs.correlator(rules)
    deploy = ev("deploy", T0 + 10_000, type="deploy", severity="info")
    errors = [ev(f"err{i}", T0 + 20_000 + i * 1_000) for i in range(3)]
    before = ev("before", T0 + 5_000)  # before the deploy: does not count
    other = [ev(f"db{i}", T0 + 20_000 + i, source="db") for i in range(3)]  # other group
    # errors arrive before the deploy (out of order): they still count
    feed(engine, [errors[0], before, *other])
    feed(engine, [deploy, errors[1], errors[2]])
    out, _ = feed(engine, [ev("tick", T0 + 310_000, severity="info")])
    assert out == [
        Correlation(
            rule="deploy-then-errors",
            kind="sequence",
            group={"source": "api"},
            window_start=T0 + 10_000,
            window_end=T0 + 310_000,
            aggregate="sequence",
            value=3.0,
            count=4,
            first_event_time=T0 + 10_000,
            last_event_time=T0 + 22_000,
            sample_event_ids=["deploy", "err0", "err1", "err2"],
        )
    ]


def test_ratio_respects_min_volume() -> None:
    rules = parse_rules(
        [
            {
                "name": "ratio",
                "kind": "ratio",
                "window": {"type": "tumbling", "size": 1_000},
                "numerator": {"severity": "error"},
                "when": ">= 0.5",
                "min_volume": 4,
            }
        ]
    )
    engine = obs.correlator(rules)
    feed(engine, [ev("e1", 100), ev("e2", 200), ev("i1", 300, severity="info")])  # 3 < 4
    feed(
        engine,
        [
            ev("e3", 1_100),
            ev("i2", 1_200, severity="info"),
            ev("e4", 1_300),
            ev("i3", 1_400, severity="info"),
        ],
    )
    out, _ = feed(engine, [ev("tick", 5_000, severity="info")])
    assert [(c.window_start, c.value, c.count) for c in out] == [(1_000, 0.5, 4)]


def test_anomaly_flags_a_window_far_from_the_baseline() -> None:
    rules = parse_rules(
        [
            {
                "name": "latency",
                "kind": "anomaly",
                "group_by": ["source"],
                "window": {"type": "tumbling", "size": 1_000},
                "aggregate": "avg(value)",
                "k": 3,
                "baseline_windows": 5,
                "min_samples": 3,
            }
        ]
    )
    engine = obs.correlator(rules)
    values = [10.0, 12.0, 11.0, 9.0, 10.0, 50.0, 10.0]
    out: list[Correlation] = []
    for w, value in enumerate(values):
        out += feed(engine, [ev(f"w{w}", w * 1_000 + 10, value=value)])[0]
    out += feed(engine, [ev("tick", 100_000, value=1.0)])[0]
    assert [(c.window_start, c.value, c.aggregate) for c in out] == [(5_000, 50.0, "avg(value)")]


def test_anomaly_baselines_expire_after_their_ttl() -> None:
    rules = parse_rules(
        [
            {
                "name": "ttl",
                "kind": "anomaly",
                "group_by": ["source"],
                "window": {"type": "tumbling", "size": 1_000},
                "aggregate": "count",
                "baseline_ttl": "10s",
            }
        ]
    )
    engine = obs.correlator(rules)
    feed(engine, [ev("a", 100, source="a")])
    feed(engine, [ev("b", 1_100, source="b")])  # closes a's window: baseline of a, ends 1_000
    assert engine.stats()["ttl"] == 2  # baseline a + b's open window
    assert len(engine.drain_changes(0)) == 3  # + clock
    feed(engine, [ev("b2", 10_999, source="b")])  # baseline b (ends 2_000) + b2's window
    assert engine.stats()["ttl"] == 3
    feed(engine, [ev("b3", 11_000, source="b")])  # watermark 1_000 + ttl: a is forgotten
    assert engine.stats()["ttl"] == 2  # baseline b and b3's window (b2's closed)
    tombstones = [decode(k) for k, v in engine.drain_changes(0) if v is None]
    # a's baseline, and b's first window (written at the drain, closed since)
    assert sorted(t[2:] for t in tombstones) == [["b", "a"], ["w", 1_000, "b"]]


# -- custom rules --------------------------------------------------------------------------------


class DistinctUsersPerDeploy(Rule):
    name = "users-per-source"
    window = TumblingWindow(type="tumbling", size=1_000)
    group_by = ("source",)
    aggregate = "distinct-users"

    def matches(self, event: Event) -> bool:
        return event.entity is not None and event.entity.startswith("user-")

    def initial(self) -> list[str]:
        return []

    def add(self, state: Any, event: Event, event_time: int) -> Any:
        if event.entity not in state:
            state.append(event.entity)
        return state

    def result(self, state: Any, count: int) -> float | None:
        return float(len(state)) if len(state) >= 2 else None


def test_custom_python_rule() -> None:
    engine = obs.correlator([DistinctUsersPerDeploy()])
    feed(
        engine,
        [
            ev("1", 10, entity="user-1"),
            ev("2", 20, entity="user-2"),
            ev("3", 30, entity="user-1"),
            ev("4", 40, entity="robot-1"),
        ],
    )
    out, _ = feed(engine, [ev("tick", 2_000, entity="user-9")])
    assert [(c.rule, c.kind, c.aggregate, c.value, c.count) for c in out] == [
        ("users-per-source", "custom", "distinct-users", 2.0, 3)
    ]


def test_invalid_custom_rules_are_config_errors() -> None:
    class NoWindow(DistinctUsersPerDeploy):
        window = None  # type: ignore[assignment]

    class BadField(DistinctUsersPerDeploy):
        group_by = ("hostname",)

    with pytest.raises(ConfigError, match=r"users-per-source\.window"):
        obs.correlator([NoWindow()])
    with pytest.raises(ConfigError, match="hostname"):
        obs.correlator([BadField()])


# -- state and changelog -------------------------------------------------------------------------


def test_drain_returns_one_entry_per_changed_key() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(1_000)])
    feed(engine, [ev(f"f{i}", T0 + 1_000 + i, source="db") for i in range(10)])
    changes = engine.drain_changes(0)
    assert len(changes) == 3  # api window, db window, partition clock
    assert len({k for k, _ in changes}) == 3
    assert engine.drain_changes(0) == []  # nothing changed since
    feed(engine, [ev("close", T0 + 70_000, severity="info")])
    changes = dict(engine.drain_changes(0))
    assert sorted(v is None for v in changes.values()) == [False, True, True]  # clock + 2 gone
    assert engine.drain_changes(1) == []  # unknown partition


def test_restore_discards_state_of_changed_rules() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    feed(engine, [ev(f"e{i}", T0 + i) for i in range(5)])
    changelog = engine.drain_changes(0)
    raw = DEFAULT_RULES[0].model_dump()
    raw["when"] = ">= 10"
    changed = obs.correlator(parse_rules([raw]))
    changed.restore(0, changelog)
    assert changed.stats()["error-burst"] == 0
    tombstones = [k for k, v in changed.drain_changes(0) if v is None]
    assert len(tombstones) == 1 and decode(tombstones[0])[0] == "error-burst"
    # the clock survives a rule change: it is a property of the partition
    _, late = feed(changed, [ev("old", T0 - 2 * MIN)])
    assert late == [0]


def test_stats_and_drop_partition_free_the_budget() -> None:
    engine = obs.correlator(DEFAULT_RULES, max_keys=3)
    feed(engine, [ev("a", T0, source="a"), ev("b", T0, source="b")], partition=0)
    feed(engine, [ev("c", T0, source="c")], partition=1)
    stats = engine.stats()
    assert stats["error-burst"] == 3 and stats["bytes"] > 0
    engine.drop_partition(0)
    assert engine.stats()["error-burst"] == 1
    feed(engine, [ev("d", T0, source="d"), ev("e", T0, source="e")], partition=1)
    assert engine.stats()["error-burst"] == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"allowed_lateness_ms": -1}, "allowed_lateness_ms"),
        ({"idle_timeout_ms": 0}, "idle_timeout_ms"),
        ({"late_policy": "ignore"}, "late_policy"),
        ({"max_keys": 0}, "max_keys"),
        ({"sample_size": -1}, "sample_size"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        obs.correlator(DEFAULT_RULES, **kwargs)
    assert caught.value.field == field


def test_empty_batch_is_a_no_op() -> None:
    engine = obs.correlator(DEFAULT_RULES)
    assert engine.process(0, [], [], 0) == ([], [], [])
    assert engine.drain_changes(0) == []
