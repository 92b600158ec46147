"""Event field paths, compiled once into fast batch selectors and key extractors.

Rules name event fields as dotted paths (``severity``, ``attributes.region``,
``shipping.country`` or a derived field). Looking those up per event with
``getattr`` and building a dict per event would cost more than the whole per-event
budget, so a rule's conditions are turned, once at start-up, into the source of a
small Python function — a list comprehension over the batch with the attribute
accesses written out — and compiled. The pipeline's :class:`FieldResolver`
(:mod:`stream.fieldpaths`) checks each path against the schema and writes its
access expression; every value (match constants, map keys) is bound as a variable
of the function's namespace, never pasted into the code.

``at_least: {field: value}`` matches ``value`` and every value declared after it
in the field's enum (``at_least: {severity: error}`` with ``enum: [debug, info,
warning, error, critical]``); the legacy spelling ``<field>_at_least: value`` means
the same.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final

from stream.fieldpaths import CodeBuilder, DynamicFields, FieldResolver

#: Match key whose value maps enum fields to the lowest value accepted.
AT_LEAST: Final = "at_least"
#: Legacy suffix: ``severity_at_least: error`` == ``at_least: {severity: error}``.
AT_LEAST_SUFFIX: Final = "_at_least"

Selector = Callable[[Sequence[Any]], list[int]]
Predicate = Callable[[Any], bool]
KeyExtractor = Callable[[Any], Hashable]
ValueExtractor = Callable[[Any], Any]

_NUMERIC: Final = frozenset({int, float})
_PLAIN: Final = re.compile(r"e\.[A-Za-z_][A-Za-z0-9_]*")
#: Resolver used when a rule is compiled without a schema (tests, hand-built rules).
ANY_FIELD: Final = DynamicFields()


def normalize_match(match: Mapping[str, object]) -> dict[str, object]:
    """Fold ``<field>_at_least: v`` into ``at_least: {field: v}``; other keys unchanged."""
    out: dict[str, object] = {}
    at_least: dict[str, object] = {}
    for path, expected in match.items():
        if path == AT_LEAST:
            if not isinstance(expected, Mapping) or not expected:
                raise ValueError("at_least must map enum fields to a value, e.g. {severity: error}")
            at_least.update(expected)
        elif path.endswith(AT_LEAST_SUFFIX) and len(path) > len(AT_LEAST_SUFFIX):
            at_least[path[: -len(AT_LEAST_SUFFIX)]] = expected
        else:
            out[path] = expected
    if at_least:
        out[AT_LEAST] = at_least
    return out


def values_at_least(fields: FieldResolver, path: str, lowest: object) -> frozenset[object]:
    """The values of an enum field declared at or after ``lowest``."""
    order = fields.enum_order(path)
    if order is None:
        raise ValueError(f"at_least needs an enum field; {path!r} declares no enum")
    if isinstance(lowest, list | tuple | set | frozenset) or lowest not in order:
        values = ", ".join(map(str, order))
        raise ValueError(f"at_least {path}: {lowest!r} is not one value of {values}")
    return frozenset(order[list(order).index(lowest) :])


def check_match(match: Mapping[str, object], fields: FieldResolver) -> None:
    """Every path exists, enum matches name declared values; raises ``ValueError``."""
    for path, expected in normalize_match(match).items():
        if path == AT_LEAST:
            assert isinstance(expected, Mapping)
            for field, lowest in expected.items():
                fields.check(field)
                values_at_least(fields, field, lowest)
            continue
        fields.check(path)
        many = isinstance(expected, list | tuple | set | frozenset)
        values = list(expected) if many else [expected]  # type: ignore[call-overload]
        if not values:
            raise ValueError(f"{path}: an empty list matches nothing")
        order = fields.enum_order(path)
        if order is not None:
            unknown = [v for v in values if v not in order]
            if unknown:
                raise ValueError(
                    f"{path}: unknown value(s) {unknown}; use {', '.join(map(str, order))}"
                )


class _Conditions:
    """Accumulates boolean conditions on ``e`` and the constants they reference."""

    def __init__(self, fields: FieldResolver) -> None:
        self.fields = fields
        self.code = CodeBuilder(fields)
        self.code.namespace["_NUMERIC"] = _NUMERIC
        self.conditions: list[str] = []

    def add_match(self, path: str, expected: object) -> None:
        if path == AT_LEAST:
            assert isinstance(expected, Mapping)
            for field, lowest in expected.items():
                allowed = values_at_least(self.fields, field, lowest)
                self.conditions.append(f"{self.code.access(field)} in {self.code.const(allowed)}")
            return
        expr = self.code.access(path)
        if isinstance(expected, list | tuple | set | frozenset):
            self.conditions.append(f"{expr} in {self.code.const(frozenset(expected))}")
        else:
            self.conditions.append(f"{expr} == {self.code.const(expected)}")

    def add_present(self, path: str) -> None:
        self.conditions.append(f"{self.code.access(path)} not in _ABSENT")

    def add_numeric(self, path: str) -> None:
        self.conditions.append(f"type({self.code.access(path)}) in _NUMERIC")

    def add_predicate(self, predicate: Predicate) -> None:
        self.conditions.append(f"{self.code.const(predicate)}(e)")

    def expression(self) -> str:
        return " and ".join(f"({c})" for c in self.conditions) or "True"


class Filter:
    """Conditions an event must meet, declared field by field, then compiled.

    ``match`` values are a scalar (equality) or a list (any of); ``at_least``
    selects an enum value and every later one. ``require`` fields must be present
    (not null/absent), ``numeric`` fields must hold an int or float — an event
    missing a group-by or aggregate field cannot be placed, so the rule skips it.
    """

    def __init__(
        self,
        match: Mapping[str, object] | None = None,
        *,
        require: Sequence[str] = (),
        numeric: Sequence[str] = (),
        predicate: Predicate | None = None,
        fields: FieldResolver = ANY_FIELD,
    ) -> None:
        self._cond = _Conditions(fields)
        for path, expected in normalize_match(match or {}).items():
            self._cond.add_match(path, expected)
        for path in require:
            self._cond.add_present(path)
        for path in numeric:
            self._cond.add_numeric(path)
        if predicate is not None:
            self._cond.add_predicate(predicate)

    @property
    def matches_everything(self) -> bool:
        return not self._cond.conditions

    def selector(self) -> Selector:
        """``select(events) -> [indices of matching events]``, one comprehension per batch."""
        if self.matches_everything:
            return _select_all
        source = (
            "def select(events):\n"
            f"    return [i for i, e in enumerate(events) if {self._cond.expression()}]\n"
        )
        selector: Selector = self._cond.code.compile(source, "select", "rule")
        return selector

    def predicate(self) -> Predicate:
        """``pred(event) -> bool`` for per-event checks (ratio numerators, sequence steps)."""
        source = f"def pred(e):\n    return bool({self._cond.expression()})\n"
        predicate: Predicate = self._cond.code.compile(source, "pred", "rule")
        return predicate


def _plain_attribute(expr: str) -> str | None:
    """``"e.source"`` -> ``"source"``; ``None`` for anything more than one attribute."""
    return expr[2:] if _PLAIN.fullmatch(expr) else None


def _select_all(events: Sequence[Any]) -> list[int]:
    return list(range(len(events)))


def key_extractor(paths: Sequence[str], fields: FieldResolver = ANY_FIELD) -> KeyExtractor | None:
    """Group key of an event: the field's value for one field, a tuple for several.

    ``None`` when the rule has no ``group_by`` (one group for the whole partition).
    Callers only pass events whose group fields are present (see :class:`Filter`).
    """
    if not paths:
        return None
    code = CodeBuilder(fields)
    parts = [code.access(p) for p in paths]
    plain = [name for part in parts if (name := _plain_attribute(part))]
    if len(plain) == len(parts):
        getter: KeyExtractor = operator.attrgetter(*plain)  # C speed for top-level fields
        return getter
    body = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ",)"
    extractor: KeyExtractor = code.compile(f"def key(e):\n    return {body}\n", "key", "rule")
    return extractor


def value_extractor(path: str, fields: FieldResolver = ANY_FIELD) -> ValueExtractor:
    """Reads one field (``value``, ``attributes.latency_ms``) from an event."""
    code = CodeBuilder(fields)
    plain = _plain_attribute(code.access(path))
    if plain:
        getter: ValueExtractor = operator.attrgetter(plain)
        return getter
    extractor: ValueExtractor = code.compile(
        f"def value(e):\n    return {code.access(path)}\n", "value", "rule"
    )
    return extractor


def group_labels(paths: Sequence[str], key: Hashable) -> dict[str, str]:
    """The ``Correlation.group`` mapping for a group key (built once per emitted record)."""
    if not paths:
        return {}
    if len(paths) == 1:
        return {paths[0]: str(key)}
    assert isinstance(key, tuple)
    return {p: str(v) for p, v in zip(paths, key, strict=True)}
