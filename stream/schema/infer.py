"""A JSON Schema (draft 2020-12) inferred from sample records (``stream schema infer``).

Writing a schema for a topic that already carries events starts from what is
there. The inference is deliberately plain, so its output is a draft a person
reviews, not a contract:

- ``type``: every JSON type seen at the position (``integer`` and ``number``
  together become ``number``; ``null`` is added when a null was seen);
- ``required``: properties present in at least ``required_ratio`` (99%) of the
  objects at that position, so a rare omission does not make the schema reject
  most of the topic, nor a rare extra field make it required;
- ``format: date-time`` when every string seen there is an RFC 3339 date-time
  with an offset (what the compiler decodes to an aware ``datetime``);
- ``enum`` for strings with few distinct values (at most ``max_enum`` among at
  least ``min_enum_support`` strings), sorted: reorder it if the field is used
  with ``at_least``, which follows enum order;
- nested objects get ``properties`` in first-seen order, arrays get ``items``
  merged over all their elements.

Numeric ranges and string lengths are not inferred: a sample's extremes are not
the domain's.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from stream.schema.compiler import JSON_TYPES

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_DATETIME_DECODER = msgspec.json.Decoder(
    Annotated[datetime.datetime, msgspec.Meta(tz=True)]  # the compiler's date-time type
)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value (``1.0`` is a ``number`` here)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def is_date_time(text: str) -> bool:
    """Does the compiler's ``format: date-time`` type accept ``text``?"""
    try:
        _DATETIME_DECODER.decode(msgspec.json.encode(text))
    except msgspec.ValidationError:
        return False
    return True


class _Position:
    """What was seen at one place of the documents (the root, a property, array items)."""

    __slots__ = ("date_times", "distinct", "items", "objects", "props", "strings", "types")

    def __init__(self) -> None:
        self.types: Counter[str] = Counter()
        self.strings = 0
        self.date_times = 0
        self.distinct: Counter[str] | None = Counter()
        self.objects = 0
        self.props: dict[str, _Position] = {}
        self.items: _Position | None = None

    def add(self, value: Any, max_distinct: int) -> None:
        kind = json_type(value)
        self.types[kind] += 1
        if kind == "string":
            self.strings += 1
            if self.date_times == self.strings - 1 and is_date_time(value):
                self.date_times += 1
            if self.distinct is not None:
                self.distinct[value] += 1
                if len(self.distinct) > max_distinct:
                    self.distinct = None  # too many to be an enum; stop counting
        elif kind == "object":
            self.objects += 1
            for key, item in value.items():
                child = self.props.get(key)
                if child is None:
                    child = self.props[key] = _Position()
                child.add(item, max_distinct)
        elif kind == "array":
            if self.items is None:
                self.items = _Position()
            for item in value:
                self.items.add(item, max_distinct)


class SchemaInferrer:
    """Feed decoded records with :meth:`add`, then ask for :meth:`schema`."""

    def __init__(
        self,
        *,
        required_ratio: float = 0.99,
        max_enum: int = 10,
        min_enum_support: int = 20,
    ) -> None:
        if not 0 < required_ratio <= 1:
            raise ValueError(f"required_ratio must be in (0, 1], got {required_ratio}")
        self.required_ratio = required_ratio
        self.max_enum = max_enum
        self.min_enum_support = min_enum_support
        self._root = _Position()
        #: records that were JSON objects (only those describe the event)
        self.records = 0
        #: records that were not JSON objects (skipped)
        self.skipped = 0

    def add(self, record: Any) -> bool:
        """Count one decoded record; ``False`` (and skipped) unless it is a JSON object."""
        if not isinstance(record, dict):
            self.skipped += 1
            return False
        self.records += 1
        self._root.add(record, self.max_enum)
        return True

    def add_all(self, records: Iterable[Any]) -> None:
        for record in records:
            self.add(record)

    def schema(self, *, title: str | None = None, description: str | None = None) -> dict[str, Any]:
        """The inferred schema document (top level ``type: object``)."""
        doc: dict[str, Any] = {"$schema": DRAFT_2020_12}
        if title:
            doc["title"] = title
        if description:
            doc["description"] = description
        doc["type"] = "object"
        doc.update(self._object(self._root))
        return doc

    def _subschema(self, position: _Position) -> dict[str, Any]:
        kinds = set(position.types)
        if "integer" in kinds and "number" in kinds:
            kinds.discard("integer")
        names = [t for t in JSON_TYPES if t in kinds]
        out: dict[str, Any] = {"type": names[0] if len(names) == 1 else names}
        if "string" in kinds:
            out.update(self._string(position))
            if "enum" in out and "null" in kinds:
                out["enum"].append(None)
        if "object" in kinds:
            out.update(self._object(position))
        if "array" in kinds and position.items is not None and position.items.types:
            out["items"] = self._subschema(position.items)
        return out

    def _string(self, position: _Position) -> dict[str, Any]:
        if position.date_times == position.strings:
            return {"format": "date-time"}
        distinct = position.distinct
        if distinct is not None and position.strings >= self.min_enum_support:
            return {"enum": sorted(distinct)}
        return {}

    def _object(self, position: _Position) -> dict[str, Any]:
        if not position.props:
            return {}
        properties = {name: self._subschema(child) for name, child in position.props.items()}
        threshold = self.required_ratio * position.objects
        required = [
            name for name, child in position.props.items() if sum(child.types.values()) >= threshold
        ]
        out: dict[str, Any] = {"properties": properties}
        if required:
            out["required"] = required
        return out
