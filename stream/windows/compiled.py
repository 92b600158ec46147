"""Rules compiled for the hot path: selectors, key extractors, aggregations, judges.

:func:`compile_rule` runs once per rule at start-up. It turns a validated
spec (or a Python :class:`~stream.windows.rules.Rule`) into plain callables:
``select(events) -> indices`` (one generated comprehension per batch),
``key_of(event)`` (``operator.attrgetter`` where possible), an
:class:`~stream.windows.aggregates.Aggregation` and a judge factory. The window
stores only ever call these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.errors import ConfigError
from stream.fieldpaths import FieldResolver
from stream.models import Correlation
from stream.windows.aggregates import (
    MAX_TIME,
    Aggregation,
    RatioAggregation,
    WindowAcc,
    aggregation_for,
)
from stream.windows.baseline import AnomalyJudge
from stream.windows.fields import (
    ANY_FIELD,
    Filter,
    KeyExtractor,
    Predicate,
    Selector,
    check_match,
    group_labels,
    key_extractor,
    value_extractor,
)
from stream.windows.judges import CustomJudge, Judge, RatioJudge, ThresholdJudge
from stream.windows.rules import Rule
from stream.windows.spec import (
    Aggregate,
    AnomalyRuleSpec,
    HoppingWindow,
    RatioRuleSpec,
    RuleSpec,
    SequenceRuleSpec,
    SessionWindow,
    ThresholdRuleSpec,
    TumblingWindow,
)

WindowSpec = TumblingWindow | HoppingWindow | SessionWindow


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What every output record of a rule says about the rule."""

    name: str
    kind: str
    aggregate: str
    group_by: tuple[str, ...]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class WindowRule:
    """A rule aggregating over tumbling, hopping or session windows."""

    info: RuleInfo
    window: WindowSpec
    select: Selector
    key_of: KeyExtractor | None
    aggregation: Aggregation
    make_judge: Callable[[], Judge]
    emit_early: bool


@dataclass(frozen=True, slots=True)
class SequenceRule:
    """A rule matching step 1 then later steps of one group within a span."""

    info: RuleInfo
    select: Selector
    key_of: KeyExtractor | None
    steps: tuple[Predicate, ...]
    min_counts: tuple[int, ...]
    within: int
    grace: int
    emit_early: bool


CompiledRule = WindowRule | SequenceRule


def build_correlation(
    info: RuleInfo,
    key: Hashable,
    start: int,
    end: int,
    value: float,
    count: int,
    first: int,
    last: int,
    samples: Sequence[tuple[int, str]],
    *,
    final: bool,
    offsets: tuple[int, int] = (-1, -1),
) -> Correlation:
    lo, hi = offsets
    return Correlation(
        rule=info.name,
        kind=info.kind,
        group=group_labels(info.group_by, key),
        window_start=start,
        window_end=end,
        aggregate=info.aggregate,
        value=value,
        count=count,
        first_event_time=first,
        last_event_time=last,
        sample_event_ids=[event_id for _, event_id in samples],
        final=final,
        first_offset=lo if 0 <= lo < MAX_TIME else -1,
        last_offset=hi,
    )


def emit_in_order(closed: list[Correlation], out: list[Correlation]) -> None:
    """Append the final records of one close in a canonical order.

    Which group's window is examined first depends on heap tie-breaks and dict
    order, which a restore does not reproduce; sorting makes a restored run
    emit byte-for-byte the same sequence as an uninterrupted one.
    """
    if len(closed) > 1:
        closed.sort(key=lambda c: (c.window_end, c.window_start, sorted(c.group.items())))
    out.extend(closed)


def acc_correlation(
    info: RuleInfo,
    key: Hashable,
    start: int,
    end: int,
    value: float,
    acc: WindowAcc,
    *,
    final: bool,
) -> Correlation:
    return build_correlation(
        info,
        key,
        start,
        end,
        value,
        acc.count,
        acc.first,
        acc.last,
        acc.samples,
        final=final,
        offsets=(acc.lo, acc.hi),
    )


def compile_rule(rule: RuleSpec | Rule, fields: FieldResolver = ANY_FIELD) -> CompiledRule:
    """Compile one rule against the events' fields.

    Raises :class:`ConfigError` for an unusable custom rule and ``ValueError``
    naming the field for a path the events do not have.
    """
    if isinstance(rule, Rule):
        return _compile_custom(rule, fields)
    _check_paths(rule, fields)
    if isinstance(rule, SequenceRuleSpec):
        return _compile_sequence(rule, fields)
    fingerprint = rule.fingerprint()
    if isinstance(rule, RatioRuleSpec):
        numerator = Filter(rule.numerator, fields=fields).predicate()
        denominator = (
            Filter(rule.denominator, fields=fields).predicate() if rule.denominator else None
        )
        either: Predicate | None = None
        if denominator is not None:
            num, den = numerator, denominator

            def either(event: object) -> bool:
                return num(event) or den(event)

        ratio_filter = Filter(rule.match, require=rule.group_by, predicate=either, fields=fields)
        ratio_judge = RatioJudge(rule.when, rule.min_volume)
        return WindowRule(
            info=RuleInfo(rule.name, rule.kind, "ratio", rule.group_by, fingerprint),
            window=rule.window,
            select=ratio_filter.selector(),
            key_of=key_extractor(rule.group_by, fields),
            aggregation=RatioAggregation(numerator, denominator),
            make_judge=lambda: ratio_judge,
            emit_early=rule.emit_early,
        )
    aggregation, field_filter = _aggregate(rule.aggregate, rule, fields)
    info = RuleInfo(rule.name, rule.kind, str(rule.aggregate), rule.group_by, fingerprint)
    if isinstance(rule, ThresholdRuleSpec):
        threshold_judge = ThresholdJudge(aggregation, rule.when)
        make_judge: Callable[[], Judge] = lambda: threshold_judge  # noqa: E731
    else:
        make_judge = _anomaly_judge_factory(rule, aggregation, fingerprint)
    return WindowRule(
        info=info,
        window=rule.window,
        select=field_filter.selector(),
        key_of=key_extractor(rule.group_by, fields),
        aggregation=aggregation,
        make_judge=make_judge,
        emit_early=rule.emit_early,
    )


def _check_paths(rule: RuleSpec, fields: FieldResolver) -> None:
    """Every field a rule names exists (schema field or derived field); ``ValueError`` if not."""
    for path in rule.group_by:
        fields.check(path)
    check_match(rule.match, fields)
    if isinstance(rule, ThresholdRuleSpec | AnomalyRuleSpec) and rule.aggregate.field:
        fields.check(rule.aggregate.field)
    if isinstance(rule, RatioRuleSpec):
        check_match(rule.numerator, fields)
        check_match(rule.denominator, fields)
    if isinstance(rule, SequenceRuleSpec):
        for step in rule.steps:
            check_match(step.match, fields)


def _aggregate(
    spec: Aggregate, rule: ThresholdRuleSpec | AnomalyRuleSpec, fields: FieldResolver
) -> tuple[Aggregation, Filter]:
    field = spec.field
    if field is None:
        return aggregation_for(spec, None), Filter(rule.match, require=rule.group_by, fields=fields)
    if spec.function == "distinct":
        field_filter = Filter(rule.match, require=(*rule.group_by, field), fields=fields)
    else:
        field_filter = Filter(rule.match, require=rule.group_by, numeric=(field,), fields=fields)
    return aggregation_for(spec, value_extractor(field, fields)), field_filter


def _anomaly_judge_factory(
    rule: ThresholdRuleSpec | AnomalyRuleSpec, aggregation: Aggregation, fingerprint: str
) -> Callable[[], Judge]:
    assert isinstance(rule, AnomalyRuleSpec)
    window = rule.window
    length = window.gap if isinstance(window, SessionWindow) else window.size
    ttl = rule.baseline_ttl if rule.baseline_ttl is not None else 2 * rule.baseline_windows * length

    def make() -> Judge:
        return AnomalyJudge(
            rule=rule.name,
            fingerprint=fingerprint,
            aggregation=aggregation,
            k=rule.k,
            direction=rule.direction,
            baseline_windows=rule.baseline_windows,
            min_samples=rule.min_samples,
            min_stddev=rule.min_stddev,
            ttl_ms=ttl,
        )

    return make


def _compile_sequence(rule: SequenceRuleSpec, fields: FieldResolver) -> SequenceRule:
    steps = tuple(Filter(step.match, fields=fields).predicate() for step in rule.steps)

    def any_step(event: object) -> bool:
        return any(step(event) for step in steps)

    select = Filter(rule.match, require=rule.group_by, predicate=any_step, fields=fields).selector()
    return SequenceRule(
        info=RuleInfo(rule.name, rule.kind, "sequence", rule.group_by, rule.fingerprint()),
        select=select,
        key_of=key_extractor(rule.group_by, fields),
        steps=steps,
        min_counts=tuple(step.min_count for step in rule.steps),
        within=rule.within,
        grace=rule.grace,
        emit_early=rule.emit_early,
    )


class _CustomAggregation:
    """Adapts a :class:`Rule`'s ``initial/add/merge`` to :class:`Aggregation`."""

    def __init__(self, rule: Rule) -> None:
        self.name = rule.aggregate
        self._rule = rule
        add_state = rule.add

        def add(acc: WindowAcc, event: Any, event_time: int) -> None:
            acc.state = add_state(acc.state, event, event_time)

        self.add: Callable[[WindowAcc, Any, int], None] | None = add

    def initial(self) -> object:
        return self._rule.initial()

    def merge(self, into: WindowAcc, other: WindowAcc) -> None:
        into.state = self._rule.merge(into.state, other.state)

    def result(self, acc: WindowAcc) -> float:
        value = self._rule.result(acc.state, acc.count)
        return float("nan") if value is None else float(value)

    def dump(self, state: object) -> object:
        return state

    def load(self, raw: object) -> object:
        return raw


def _compile_custom(rule: Rule, fields: FieldResolver) -> WindowRule:
    cls = type(rule).__qualname__
    name = getattr(rule, "name", None)
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ConfigError(f"{cls}.name", "a custom rule needs a non-empty name without spaces")
    window = getattr(rule, "window", None)
    if not isinstance(window, TumblingWindow | HoppingWindow | SessionWindow):
        raise ConfigError(f"{name}.window", "set a TumblingWindow, HoppingWindow or SessionWindow")
    try:
        check_match(rule.match, fields)
        for path in rule.group_by:
            fields.check(path)
        field_filter = Filter(
            dict(rule.match),
            require=rule.group_by,
            predicate=rule.matches if rule.overrides_matches() else None,
            fields=fields,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}.match", str(exc)) from None
    digest = hashlib.blake2b(
        f"{cls}|{rule.version}|{window.model_dump_json()}|{sorted(rule.match.items())!r}|"
        f"{rule.group_by!r}".encode(),
        digest_size=6,
    ).hexdigest()
    custom_judge = CustomJudge(rule)
    return WindowRule(
        info=RuleInfo(name, rule.kind, rule.aggregate, tuple(rule.group_by), digest),
        window=window,
        select=field_filter.selector(),
        key_of=key_extractor(rule.group_by, fields),
        aggregation=_CustomAggregation(rule),
        make_judge=lambda: custom_judge,
        emit_early=rule.emit_early,
    )
