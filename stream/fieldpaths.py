"""Field paths of a pipeline's events, turned into Python source for generated accessors.

Rules, join keys, derived-field inputs and the event-time field all name event
fields as dotted paths (``customer_id``, ``shipping.country``, ``attributes.region``).
Reading them per event through ``getattr`` loops would cost more than the whole
per-event budget (DESIGN.md §2), so the stages and the window engine generate
small functions once at start-up (list comprehensions with the attribute accesses
written out) and ask a :class:`FieldResolver` for the expression of each path.

Two resolvers:

* :class:`SchemaFields` knows the pipeline's compiled schema: a path must name one
  of its properties (or a derived field), nested objects are reached by attribute,
  free-form objects (``additionalProperties`` maps) by ``.get``, and enum order is
  known for ``at_least`` matches. Unknown paths fail at start-up.
* :class:`DynamicFields` accepts any path (attribute access on the first segment,
  a generic walk after it): for stages built in tests or by hand without a schema.

Absent values: an optional property the record lacks decodes to ``msgspec.UNSET``
and a JSON ``null`` to ``None``; generated code treats both as "absent"
(:data:`ABSENT`). Every value an expression reads is bound as a constant of the
generated function's namespace, never pasted into its source.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

#: Values that mean "the event has no value here".
ABSENT: Final = (None, msgspec.UNSET)
_EMPTY: Final[dict[str, Any]] = {}


class _Nothing:
    """Stands in for an absent nested object: every attribute of it is ``None``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> None:
        return None

    def __bool__(self) -> bool:
        return False


NOTHING: Final = _Nothing()


def walk(value: Any, key: str) -> Any:
    """One step of a dynamic path: a mapping key, an attribute, or ``None``."""
    if value is None or value is msgspec.UNSET:
        return None
    if isinstance(value, dict):
        return value.get(key)
    return getattr(value, key, None)


#: Names every generated accessor may use.
BASE_NAMESPACE: Final[dict[str, Any]] = {
    "_EMPTY": _EMPTY,
    "_NOTHING": NOTHING,
    "_ABSENT": ABSENT,
    "_walk": walk,
}

Const = Callable[[object], str]


class FieldResolver(Protocol):
    """Turns a dotted path into a Python expression reading it from an event ``e``."""

    def check(self, path: str) -> None:
        """Raise ``ValueError`` naming the path when events have no such field."""
        ...

    def access(self, path: str, const: Const, var: str = "e") -> str:
        """Source of an expression reading ``path`` from ``var`` (absent -> None/UNSET)."""
        ...

    def enum_order(self, path: str) -> Sequence[object] | None:
        """The declared order of an enum field's values (``at_least`` matches), if any."""
        ...

    def paths(self) -> list[str]:
        """Every path the resolver knows (for error messages); empty when any goes."""
        ...


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


class DynamicFields:
    """Any path goes: ``e.first`` then a generic :func:`walk` for each later segment."""

    def __init__(self, enums: Mapping[str, Sequence[object]] | None = None) -> None:
        self._enums = dict(enums or {})

    def check(self, path: str) -> None:
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"invalid field path {path!r}")

    def access(self, path: str, const: Const, var: str = "e") -> str:
        self.check(path)
        first, *rest = path.split(".")
        expr = f"{var}.{first}" if _is_identifier(first) else f"_walk({var}, {const(first)})"
        for part in rest:
            expr = f"_walk({expr}, {const(part)})"
        return expr

    def enum_order(self, path: str) -> Sequence[object] | None:
        return self._enums.get(path)

    def paths(self) -> list[str]:
        return []


class SchemaFields:
    """Paths of a compiled schema (``stream.schema``), plus extra top-level attributes.

    ``fields`` maps each dotted path to an object with ``attrs`` (attribute names
    along the path), ``optional`` (per level: may be absent) and ``enum``; a path
    whose prefix is a free-form object (no declared properties) continues as map keys.
    ``extra`` maps additional names (derived fields) to the attribute holding them.
    """

    def __init__(self, fields: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> None:
        self._fields = dict(fields)
        self._extra = dict(extra or {})

    def paths(self) -> list[str]:
        return sorted([*self._fields, *self._extra])

    def _split(self, path: str) -> tuple[Any, list[str]] | None:
        """The longest declared prefix of ``path`` and the map keys after it."""
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            info = self._fields.get(".".join(parts[:cut]))
            if info is None:
                continue
            rest = parts[cut:]
            if rest and not _is_map(info, self._fields, ".".join(parts[:cut])):
                return None
            return info, rest
        return None

    def check(self, path: str) -> None:
        if path in self._extra or self._split(path) is not None:
            return
        known = ", ".join(self.paths())
        raise ValueError(f"unknown field {path!r}; the schema has {known}")

    def access(self, path: str, const: Const, var: str = "e") -> str:
        if path in self._extra:
            return f"{var}.{self._extra[path]}"
        split = self._split(path)
        if split is None:
            self.check(path)
            raise AssertionError("unreachable")
        info, keys = split
        expr = var
        for level, attr in enumerate(info.attrs):
            if level > 0 and info.optional[level - 1]:
                expr = f"({expr} or _NOTHING)"
            expr = f"{expr}.{attr}"
        for key in keys:
            expr = f"({expr} or _EMPTY).get({const(key)})"
        return expr

    def enum_order(self, path: str) -> Sequence[object] | None:
        info = self._fields.get(path)
        return None if info is None else info.enum


def _is_map(info: Any, fields: Mapping[str, Any], path: str) -> bool:
    """A free-form object: typed ``object`` without declared properties."""
    if "object" not in info.types:
        return False
    prefix = path + "."
    return not any(p.startswith(prefix) for p in fields)


class CodeBuilder:
    """Collects the constants a generated function references; compiles its source."""

    def __init__(self, resolver: FieldResolver) -> None:
        self.resolver = resolver
        self.namespace: dict[str, Any] = dict(BASE_NAMESPACE)

    def const(self, value: object) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def access(self, path: str, var: str = "e") -> str:
        return self.resolver.access(path, self.const, var)

    def compile(self, source: str, name: str, label: str = "accessor") -> Any:
        namespace = dict(self.namespace)
        exec(compile(source, f"<{label} {name}>", "exec"), namespace)  # paths checked, values bound
        return namespace[name]


def batch_getter(resolver: FieldResolver, paths: Sequence[str], label: str) -> Callable[..., list]:  # type: ignore[type-arg]
    """``get(events) -> [value or tuple of values per event]``: one comprehension per batch."""
    builder = CodeBuilder(resolver)
    parts = [builder.access(p) for p in paths]
    body = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ",)"
    source = f"def get(events):\n    return [{body} for e in events]\n"
    getter: Callable[..., list] = builder.compile(source, "get", label)  # type: ignore[type-arg]
    return getter


def single_getter(resolver: FieldResolver, path: str, label: str) -> Callable[[Any], Any]:
    """``get(event) -> value`` for one path."""
    builder = CodeBuilder(resolver)
    source = f"def get(e):\n    return {builder.access(path)}\n"
    getter: Callable[[Any], Any] = builder.compile(source, "get", label)
    return getter
