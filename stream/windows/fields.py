"""Event field paths, compiled once into fast batch selectors and key extractors.

Rules name event fields as strings (``severity``, ``attributes.region``). Looking
those up per event with ``getattr(event, name)`` and building a dict per event
would cost more than the whole per-event budget, so a rule's conditions are
turned, once at start-up, into the source of a small Python function — a list
comprehension over the batch with the attribute accesses written out — and
compiled. Only field names from a fixed whitelist ever reach the generated
source; every value (match constants, attribute names) is bound as a variable
of the function's namespace, never pasted into the code.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final

from stream.models import SEVERITY_RANK, Event

#: Top-level ``Event`` fields a rule may match or group on (``timestamp`` is the
#: window axis, ``attributes`` is reached through ``attributes.<name>``).
TOP_LEVEL_FIELDS: Final = frozenset(
    {"event_id", "type", "source", "severity", "entity", "value", "trace_id"}
)
ATTRIBUTES_PREFIX: Final = "attributes."
#: Match key for the ``severity >= X`` convenience.
SEVERITY_AT_LEAST: Final = "severity_at_least"

Selector = Callable[[Sequence[Event]], list[int]]
Predicate = Callable[[Event], bool]
KeyExtractor = Callable[[Event], Hashable]
ValueExtractor = Callable[[Event], Any]

_EMPTY: Final[dict[str, Any]] = {}
_NUMERIC: Final = frozenset({int, float})


def check_field_path(path: str) -> str:
    """Return ``path`` if it names an event field, else raise ``ValueError`` saying why."""
    if path in TOP_LEVEL_FIELDS:
        return path
    if path.startswith(ATTRIBUTES_PREFIX) and len(path) > len(ATTRIBUTES_PREFIX):
        return path
    allowed = ", ".join(sorted(TOP_LEVEL_FIELDS))
    raise ValueError(
        f"unknown event field {path!r}; expected one of {allowed} or attributes.<name>"
    )


def severities_at_least(severity: str) -> frozenset[str]:
    """All severities ranked at or above ``severity``."""
    rank = SEVERITY_RANK[severity]
    return frozenset(s for s, r in SEVERITY_RANK.items() if r >= rank)


class _CodeBuilder:
    """Accumulates boolean conditions on ``e`` and the constants they reference."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.namespace: dict[str, Any] = {"_EMPTY": _EMPTY, "_NUMERIC": _NUMERIC}

    def const(self, value: object) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def access(self, path: str) -> str:
        """Expression reading ``path`` from ``e`` (``None`` when an attribute is absent)."""
        if path in TOP_LEVEL_FIELDS:
            return f"e.{path}"
        check_field_path(path)
        return f"(e.attributes or _EMPTY).get({self.const(path[len(ATTRIBUTES_PREFIX) :])})"

    def add_match(self, path: str, expected: object) -> None:
        if path == SEVERITY_AT_LEAST:
            assert isinstance(expected, str)
            self.conditions.append(f"e.severity in {self.const(severities_at_least(expected))}")
            return
        expr = self.access(path)
        if isinstance(expected, list | tuple | set | frozenset):
            self.conditions.append(f"{expr} in {self.const(frozenset(expected))}")
        else:
            self.conditions.append(f"{expr} == {self.const(expected)}")

    def add_present(self, path: str) -> None:
        self.conditions.append(f"{self.access(path)} is not None")

    def add_numeric(self, path: str) -> None:
        self.conditions.append(f"type({self.access(path)}) in _NUMERIC")

    def add_predicate(self, predicate: Predicate) -> None:
        self.conditions.append(f"{self.const(predicate)}(e)")

    def expression(self) -> str:
        return " and ".join(f"({c})" for c in self.conditions) or "True"

    def compile(self, source: str, name: str) -> Any:
        namespace = dict(self.namespace)
        exec(compile(source, f"<rule {name}>", "exec"), namespace)  # whitelisted fields only
        return namespace[name]


class Filter:
    """Conditions an event must meet, declared field by field, then compiled.

    ``match`` values are a scalar (equality) or a list (any of); the
    ``severity_at_least`` key selects that severity and every higher one.
    ``require`` fields must be present (not ``None``), ``numeric`` fields must
    hold an int or float — an event missing a group-by or aggregate field
    cannot be placed, so the rule skips it.
    """

    def __init__(
        self,
        match: Mapping[str, object] | None = None,
        *,
        require: Sequence[str] = (),
        numeric: Sequence[str] = (),
        predicate: Predicate | None = None,
    ) -> None:
        self._builder = _CodeBuilder()
        for path, expected in (match or {}).items():
            self._builder.add_match(path, expected)
        for path in require:
            self._builder.add_present(path)
        for path in numeric:
            self._builder.add_numeric(path)
        if predicate is not None:
            self._builder.add_predicate(predicate)

    @property
    def matches_everything(self) -> bool:
        return not self._builder.conditions

    def selector(self) -> Selector:
        """``select(events) -> [indices of matching events]``, one comprehension per batch."""
        if self.matches_everything:
            return _select_all
        source = (
            "def select(events):\n"
            f"    return [i for i, e in enumerate(events) if {self._builder.expression()}]\n"
        )
        selector: Selector = self._builder.compile(source, "select")
        return selector

    def predicate(self) -> Predicate:
        """``pred(event) -> bool`` for per-event checks (ratio numerators, sequence steps)."""
        source = f"def pred(e):\n    return bool({self._builder.expression()})\n"
        predicate: Predicate = self._builder.compile(source, "pred")
        return predicate


def _select_all(events: Sequence[Event]) -> list[int]:
    return list(range(len(events)))


def key_extractor(paths: Sequence[str]) -> KeyExtractor | None:
    """Group key of an event: the field's value for one field, a tuple for several.

    ``None`` when the rule has no ``group_by`` (one group for the whole partition).
    Callers only pass events whose group fields are present (see :class:`Filter`).
    """
    if not paths:
        return None
    if all(p in TOP_LEVEL_FIELDS for p in paths):
        getter: KeyExtractor = operator.attrgetter(*paths)
        return getter
    builder = _CodeBuilder()
    parts = [builder.access(p) for p in paths]
    body = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ",)"
    extractor: KeyExtractor = builder.compile(f"def key(e):\n    return {body}\n", "key")
    return extractor


def value_extractor(path: str) -> ValueExtractor:
    """Reads one field (``value``, ``attributes.latency_ms``) from an event."""
    if path in TOP_LEVEL_FIELDS:
        getter: ValueExtractor = operator.attrgetter(path)
        return getter
    builder = _CodeBuilder()
    extractor: ValueExtractor = builder.compile(
        f"def value(e):\n    return {builder.access(path)}\n", "value"
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
