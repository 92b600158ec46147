"""Correlation rule specs: the YAML users write, validated once at start-up.

Every model is a frozen pydantic v2 model with ``extra="forbid"``, so a typo in
a rule (``sevrity``, ``windw``) fails at start-up with an error naming the
field, e.g. ``invalid configuration: rules[0].window.size: invalid duration
'60x'; use e.g. 250ms, 60s, 5m, 1h, 1d or integer milliseconds``. The hot path
never sees these models: :mod:`stream.windows.compiled` turns them into
compiled selectors and plain objects first.

Shape (README "Correlation rules" has runnable examples)::

    rules:
      - name: error-burst
        kind: threshold                     # threshold | ratio | anomaly | sequence
        match: {severity: [error, critical]}
        group_by: [source]
        window: {type: tumbling, size: 60s, grace: 10s}
        aggregate: count          # count | sum(f) | avg(f) | min(f) | max(f) | distinct(f)
        when: ">= 5"
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from stream.errors import ConfigError
from stream.windows.fields import AT_LEAST, normalize_match

_UNIT_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: object) -> int:
    """``"250ms"``, ``"60s"``, ``"5m"``, ``"1h"``, ``"1d"`` or integer milliseconds -> ms."""
    if isinstance(value, bool):
        raise ValueError("a duration must be e.g. 60s or integer milliseconds, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            ms = float(m.group(1)) * _UNIT_MS[m.group(2)]
            if ms.is_integer():
                return int(ms)
            raise ValueError(f"duration {value!r} is not a whole number of milliseconds")
        if value.strip().isdigit():
            return int(value)
    raise ValueError(
        f"invalid duration {value!r}; use e.g. 250ms, 60s, 5m, 1h, 1d or integer milliseconds"
    )


#: Milliseconds, written as ``60s``/``5m``/... or an integer; ``>= 0``.
Duration = Annotated[int, BeforeValidator(parse_duration), Field(ge=0)]
#: Like :data:`Duration` but strictly positive (window sizes, gaps, spans).
PositiveDuration = Annotated[int, BeforeValidator(parse_duration), Field(gt=0)]


def check_path_syntax(path: str) -> str:
    """A dotted field path (``amount``, ``shipping.country``); whether the pipeline's events
    have it is checked when the rule is compiled against the schema."""
    if not path or any(not part.strip() or part != part.strip() for part in path.split(".")):
        raise ValueError(f"invalid field path {path!r}")
    return path


FieldPath = Annotated[str, AfterValidator(check_path_syntax)]

MatchScalar = str | int | float | bool


def check_match(match: Mapping[str, object]) -> Mapping[str, object]:
    """Validate the shape of a ``match:`` mapping; raises ``ValueError``.

    Field names and enum values are checked against the schema at compile time
    (:func:`stream.windows.fields.check_match`).
    """
    for path, expected in normalize_match(match).items():
        if path == AT_LEAST:
            assert isinstance(expected, Mapping)
            for field, lowest in expected.items():
                check_path_syntax(field)
                if isinstance(lowest, list | tuple | set | frozenset | Mapping):
                    raise ValueError(f"at_least {field}: give one value, not a list")
            continue
        check_path_syntax(path)
        many = isinstance(expected, list | tuple | set | frozenset)
        if many and not expected:
            raise ValueError(f"{path}: an empty list matches nothing")
    return match


#: ``{field: value}`` or ``{field: [any, of, these]}``; all entries must hold.
Match = Annotated[
    dict[str, MatchScalar | list[MatchScalar] | dict[str, MatchScalar]],
    AfterValidator(check_match),
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- windows ---------------------------------------------------------------------------------------


class TumblingWindow(_Frozen):
    """Fixed, non-overlapping windows ``[k*size, (k+1)*size)`` aligned to the epoch."""

    type: Literal["tumbling"]
    size: PositiveDuration
    grace: Duration = 0


class HoppingWindow(_Frozen):
    """Overlapping windows of ``size`` starting every ``advance`` (epoch aligned)."""

    type: Literal["hopping"]
    size: PositiveDuration
    advance: PositiveDuration
    grace: Duration = 0

    @model_validator(mode="after")
    def _advance_within_size(self) -> HoppingWindow:
        if self.advance > self.size:
            raise ValueError("advance must not exceed size (windows would leave gaps)")
        return self


class SessionWindow(_Frozen):
    """Per-key sessions: events less than ``gap`` apart belong to the same session."""

    type: Literal["session"]
    gap: PositiveDuration
    grace: Duration = 0


WindowSpec = Annotated[TumblingWindow | HoppingWindow | SessionWindow, Field(discriminator="type")]

# -- conditions and aggregates ---------------------------------------------------------------------

Operator = Literal[">=", ">", "<=", "<", "=="]
_CONDITION_RE: Final = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")


class Condition(_Frozen):
    """``when: ">= 5"``: the aggregate compared with a bound."""

    op: Operator
    bound: float

    def holds(self, value: float) -> bool:
        op, bound = self.op, self.bound
        if op == ">=":
            return value >= bound
        if op == ">":
            return value > bound
        if op == "<=":
            return value <= bound
        if op == "<":
            return value < bound
        return value == bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


def _parse_condition(value: object) -> object:
    if isinstance(value, str):
        m = _CONDITION_RE.match(value)
        if not m:
            raise ValueError(
                f"invalid condition {value!r}; use an operator (>=, >, <=, <, ==) and a number, "
                'e.g. ">= 5"'
            )
        return {"op": m.group(1), "bound": float(m.group(2))}
    return value


ConditionSpec = Annotated[Condition, BeforeValidator(_parse_condition)]

AggregateFunction = Literal["count", "sum", "avg", "min", "max", "distinct"]
_AGGREGATE_RE: Final = re.compile(r"^\s*(\w+)\s*(?:\(\s*([\w.-]+)\s*\))?\s*$")


class Aggregate(_Frozen):
    """``count``, ``sum(value)``, ``avg(attributes.latency_ms)``, ``distinct(entity)``, ..."""

    function: AggregateFunction
    field: str | None = None

    @model_validator(mode="after")
    def _field_fits_function(self) -> Aggregate:
        if self.function == "count":
            if self.field is not None:
                raise ValueError("count takes no field")
        elif self.field is None:
            raise ValueError(f"{self.function} needs a field, e.g. {self.function}(value)")
        else:
            check_path_syntax(self.field)
        return self

    def __str__(self) -> str:
        return self.function if self.field is None else f"{self.function}({self.field})"


def _parse_aggregate(value: object) -> object:
    if isinstance(value, str):
        m = _AGGREGATE_RE.match(value)
        if not m or m.group(1) not in get_args(AggregateFunction):
            raise ValueError(
                f"invalid aggregate {value!r}; use count, sum(f), avg(f), min(f), max(f) or "
                "distinct(f)"
            )
        return {"function": m.group(1), "field": m.group(2)}
    return value


AggregateSpec = Annotated[Aggregate, BeforeValidator(_parse_aggregate)]


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


GroupBy = Annotated[tuple[FieldPath, ...], BeforeValidator(_one_or_many)]

# -- rules -----------------------------------------------------------------------------------------


class _RuleSpecBase(_Frozen):
    #: Unique rule name; the ``rule`` of every correlation and the metric label.
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]
    #: Pre-filter every event of the rule must pass (all entries hold).
    match: Match = Field(default_factory=dict)
    #: Fields whose values form the group key (events missing one are skipped).
    group_by: GroupBy = ()
    #: Also emit a non-final record when the condition first becomes true.
    emit_early: bool = False

    def fingerprint(self) -> str:
        """Short hash of the spec: state written under another definition is not reused."""
        return hashlib.blake2b(self.model_dump_json().encode(), digest_size=6).hexdigest()


class ThresholdRuleSpec(_RuleSpecBase):
    """An aggregate over a group's events in a window crosses a bound."""

    kind: Literal["threshold"]
    window: WindowSpec
    aggregate: AggregateSpec = Aggregate(function="count")
    when: ConditionSpec


class RatioRuleSpec(_RuleSpecBase):
    """count(numerator) / count(denominator) in a window crosses a bound."""

    kind: Literal["ratio"]
    window: WindowSpec
    numerator: Match
    denominator: Match = Field(default_factory=dict)
    when: ConditionSpec
    #: No result unless the denominator counted at least this many events.
    min_volume: int = Field(default=1, ge=1)


class AnomalyRuleSpec(_RuleSpecBase):
    """A window's aggregate deviates from the group's baseline by more than ``k`` std devs.

    The baseline is the mean and population standard deviation of the
    aggregate over the group's last ``baseline_windows`` closed windows.
    """

    kind: Literal["anomaly"]
    window: WindowSpec
    aggregate: AggregateSpec = Aggregate(function="avg", field="value")
    k: float = Field(default=3.0, gt=0)
    direction: Literal["both", "above", "below"] = "both"
    baseline_windows: int = Field(default=30, ge=2, le=10_000)
    min_samples: int = Field(default=5, ge=2)
    #: Floor of the standard deviation, so a perfectly flat baseline is not "infinitely" tight.
    min_stddev: float = Field(default=0.0, ge=0)
    #: Forget a group's baseline after this much event time without a closed window
    #: (default: 2 x baseline_windows x window length).
    baseline_ttl: Duration | None = None

    @model_validator(mode="after")
    def _samples_fit_baseline(self) -> AnomalyRuleSpec:
        if self.min_samples > self.baseline_windows:
            raise ValueError("min_samples must not exceed baseline_windows")
        return self


class SequenceStep(_Frozen):
    """One step of a sequence: events matching ``match``, at least ``min_count`` of them."""

    match: Match
    min_count: int = Field(default=1, ge=1)


class SequenceRuleSpec(_RuleSpecBase):
    """Step 1, then each later step in event-time order, for one group within ``within``."""

    kind: Literal["sequence"]
    steps: Annotated[tuple[SequenceStep, ...], Field(min_length=2, max_length=10)]
    within: PositiveDuration
    grace: Duration = 0

    @model_validator(mode="after")
    def _first_step_once(self) -> SequenceRuleSpec:
        if self.steps[0].min_count != 1:
            raise ValueError("steps[0].min_count must be 1: each first-step event opens a window")
        return self


RuleSpec = Annotated[
    ThresholdRuleSpec | RatioRuleSpec | AnomalyRuleSpec | SequenceRuleSpec,
    Field(discriminator="kind"),
]


class RuleSet(_Frozen):
    """The ``rules:`` section of the pipeline YAML."""

    rules: tuple[RuleSpec, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in RESERVED_RULE_NAMES:
                raise ValueError(f"rule name {rule.name!r} is reserved")
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return self


#: ``Correlator.stats()`` reports the state size under this key next to the rule names.
RESERVED_RULE_NAMES: Final = frozenset({"bytes"})

_RULE_TAGS: Final = frozenset({"threshold", "ratio", "anomaly", "sequence"})
_WINDOW_TAGS: Final = frozenset({"tumbling", "hopping", "session"})


def format_location(loc: Sequence[int | str], error_type: str = "", ctx: Any = None) -> str:
    """``('rules', 0, 'threshold', 'window', 'tumbling', 'size')`` -> ``rules[0].window.size``.

    Drops the union tags pydantic inserts and names the discriminator when it
    is the missing or wrong field.
    """
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif (isinstance(previous, int) and item in _RULE_TAGS) or (
            previous == "window" and item in _WINDOW_TAGS
        ):
            pass
        else:
            parts.append(("." if parts else "") + str(item))
        previous = item
    if error_type in {"union_tag_not_found", "union_tag_invalid"} and ctx:
        parts.append("." + str(ctx.get("discriminator", "")).strip("'"))
    return "".join(parts).lstrip(".") or "rules"


def config_error(exc: PydanticValidationError, prefix: str = "") -> ConfigError:
    """One :class:`ConfigError` naming the first invalid field (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    field = format_location(first["loc"], first["type"], first.get("ctx"))
    reason = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "union_tag_not_found":
        reason = "required"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error(s))"
    return ConfigError(f"{prefix}{field}", reason)


_RULE_SET_ADAPTER: Final = TypeAdapter(RuleSet)


def parse_rules(data: Mapping[str, Any] | Sequence[Any]) -> tuple[RuleSpec, ...]:
    """Validate ``{"rules": [...]}`` (or the bare list) into rule specs.

    Raises :class:`ConfigError` naming the offending field, e.g. ``rules[1].within``.
    """
    payload = data if isinstance(data, Mapping) else {"rules": list(data)}
    try:
        return _RULE_SET_ADAPTER.validate_python(payload).rules
    except PydanticValidationError as exc:
        raise config_error(exc) from None


def parse_rules_yaml(text: str) -> tuple[RuleSpec, ...]:
    """Parse rule YAML text (a document with a top-level ``rules:`` list)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("rules", f"not valid YAML: {exc}") from None
    if not isinstance(data, Mapping | list):
        raise ConfigError("rules", "expected a mapping with a 'rules:' list")
    return parse_rules(data)


#: The product's first rule: 5 or more error/critical events from one source in a minute.
DEFAULT_RULES: Final[tuple[RuleSpec, ...]] = parse_rules(
    {
        "rules": [
            {
                "name": "error-burst",
                "kind": "threshold",
                "match": {"severity": ["error", "critical"]},
                "group_by": ["source"],
                "window": {"type": "tumbling", "size": "60s", "grace": "10s"},
                "aggregate": "count",
                "when": ">= 5",
            }
        ]
    }
)
