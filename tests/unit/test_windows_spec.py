"""Rule spec parsing: durations, conditions, aggregates, and errors that name the field."""

from __future__ import annotations

import pytest

import tests.support.observability as obs
from stream.errors import ConfigError
from stream.windows.spec import (
    DEFAULT_RULES,
    Aggregate,
    Condition,
    SequenceRuleSpec,
    ThresholdRuleSpec,
    TumblingWindow,
    parse_duration,
    parse_rules,
    parse_rules_yaml,
)


def _threshold(**overrides: object) -> dict[str, object]:
    rule: dict[str, object] = {
        "name": "r",
        "kind": "threshold",
        "window": {"type": "tumbling", "size": "60s"},
        "when": ">= 5",
    }
    rule.update(overrides)
    return rule


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("60s", 60_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1.5s", 1_500),
        (1234, 1234),
        ("42", 42),
    ],
)
def test_durations(text: object, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["60x", "", "s", "1.0001s", True, 1.5, None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_default_rules_are_the_error_burst_rule() -> None:
    (rule,) = DEFAULT_RULES
    assert isinstance(rule, ThresholdRuleSpec)
    assert rule.name == "error-burst"
    assert rule.match == {"severity": ["error", "critical"]}
    assert rule.group_by == ("source",)
    assert rule.window == TumblingWindow(type="tumbling", size=60_000, grace=10_000)
    assert rule.aggregate == Aggregate(function="count")
    assert rule.when == Condition(op=">=", bound=5.0)


def test_yaml_with_every_kind_parses() -> None:
    rules = parse_rules_yaml(
        """
rules:
  - name: error-burst
    kind: threshold
    match: {severity: [error, critical]}
    group_by: [source]
    window: {type: tumbling, size: 60s, grace: 10s}
    aggregate: count
    when: ">= 5"
  - name: deploy-then-errors
    kind: sequence
    group_by: [source]
    steps: [{match: {type: deploy}}, {match: {severity: error}, min_count: 3}]
    within: 5m
  - name: error-ratio
    kind: ratio
    group_by: source
    window: {type: hopping, size: 5m, advance: 1m}
    numerator: {severity_at_least: error}
    when: "> 0.25"
    min_volume: 20
  - name: latency
    kind: anomaly
    match: {type: request, attributes.region: [eu, us]}
    group_by: [source, attributes.region]
    window: {type: session, gap: 30s}
    aggregate: max(value)
    k: 4
    direction: above
"""
    )
    assert [r.kind for r in rules] == ["threshold", "sequence", "ratio", "anomaly"]
    sequence = rules[1]
    assert isinstance(sequence, SequenceRuleSpec)
    assert sequence.within == 300_000
    assert [s.min_count for s in sequence.steps] == [1, 3]
    assert rules[2].group_by == ("source",)
    assert rules[3].group_by == ("source", "attributes.region")


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        (
            _threshold(window={"type": "tumbling", "size": "60x"}),
            "rules[0].window.size",
            "invalid duration",
        ),
        (_threshold(window={"type": "tumbling", "size": 0}), "rules[0].window.size", "greater"),
        (_threshold(window={"type": "sliding", "size": "1s"}), "rules[0].window.type", "sliding"),
        (
            _threshold(window={"type": "hopping", "size": "1m", "advance": "2m"}),
            "rules[0].window",
            "advance",
        ),
        (_threshold(window={"type": "session"}), "rules[0].window.gap", "Field required"),
        (_threshold(when="at least 5"), "rules[0].when", "invalid condition"),
        (_threshold(aggregate="median(value)"), "rules[0].aggregate", "median"),
        (_threshold(aggregate="sum"), "rules[0].aggregate", "needs a field"),
        (_threshold(windw={"type": "tumbling", "size": "1s"}), "rules[0].windw", "Extra"),
        (_threshold(kind="treshold"), "rules[0].kind", "treshold"),
        ({"name": "r", "window": {"type": "tumbling", "size": "1s"}}, "rules[0].kind", "required"),
        (_threshold(name="has space"), "rules[0].name", "pattern"),
        (_threshold(name="bytes"), "rules", "reserved"),
        (
            {
                "name": "s",
                "kind": "sequence",
                "steps": [{"match": {"type": "deploy"}}],
                "within": "5m",
            },
            "rules[0].steps",
            "at least 2",
        ),
        (
            {
                "name": "s",
                "kind": "sequence",
                "within": "5m",
                "steps": [{"match": {"type": "a"}, "min_count": 2}, {"match": {"type": "b"}}],
            },
            "rules[0]",
            "steps[0].min_count",
        ),
        (
            {
                "name": "a",
                "kind": "anomaly",
                "window": {"type": "tumbling", "size": "1m"},
                "min_samples": 50,
                "baseline_windows": 10,
            },
            "rules[0]",
            "min_samples",
        ),
    ],
)
def test_errors_name_the_field(rule: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules({"rules": [rule]})
    assert caught.value.field == field
    assert message in caught.value.reason
    assert str(caught.value).startswith(f"invalid configuration: {field}: ")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_threshold(match={"sevrity": "error"}), "unknown field 'sevrity'"),
        (_threshold(match={"severity": "fatal"}), "unknown value(s) ['fatal']"),
        (_threshold(match={"severity_at_least": "loud"}), "at_least severity: 'loud'"),
        (_threshold(match={"at_least": {"source": "x"}}), "'source' declares no enum"),
        (_threshold(group_by=["source", "host"]), "unknown field 'host'"),
        (_threshold(aggregate="avg(latency)"), "unknown field 'latency'"),
    ],
)
def test_fields_are_checked_against_the_schema(rule: dict[str, object], message: str) -> None:
    """Rules parse on their own; the fields they name are checked when compiled
    against the pipeline's schema (here the bundled one), before the worker starts."""
    rules = parse_rules({"rules": [rule]})
    with pytest.raises(ConfigError) as caught:
        obs.correlator(rules)
    assert caught.value.field == "correlate.rules[0]"
    assert message in caught.value.reason


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="duplicate rule name 'r'"):
        parse_rules([_threshold(), _threshold()])


def test_yaml_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules_yaml("rules: [unclosed")
    assert caught.value.field == "rules"
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_rules_yaml("42")


def test_specs_are_frozen() -> None:
    (rule,) = DEFAULT_RULES
    with pytest.raises(ValueError):
        rule.name = "other"  # type: ignore[misc]


def test_fingerprint_changes_with_the_definition() -> None:
    a = parse_rules([_threshold()])[0]
    b = parse_rules([_threshold(when=">= 6")])[0]
    assert a.fingerprint() == parse_rules([_threshold()])[0].fingerprint()
    assert a.fingerprint() != b.fingerprint()
