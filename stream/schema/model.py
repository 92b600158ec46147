"""What a compiled schema hands the engine: the decoder and a map of its fields.

The engine never interprets JSON Schema; it decodes with :attr:`CompiledSchema.decoder`
(one msgspec C pass, no per-event dict) and resolves the dotted paths in rules,
joins and group-bys through :meth:`CompiledSchema.field`, which knows the Python
attribute names (renamed properties), which levels may be absent or null, the JSON
types and the enum order.

Absent optional properties decode to :data:`msgspec.UNSET` (an explicit ``null`` is
``None`` and only accepted where the schema allows ``"null"``); the engine treats
UNSET and None alike as "absent".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec


class FieldInfo(NamedTuple):
    """One property path of the schema (nested object properties included, arrays not)."""

    #: dotted path of JSON property names: ``"shipping.country"``
    path: str
    #: Python attribute names on the decoded Structs along the path (after renaming)
    attrs: tuple[str, ...]
    #: per level: may this level be absent (``msgspec.UNSET``) or ``None``?
    optional: tuple[bool, ...]
    #: JSON types accepted; ``"number"`` always comes with ``"integer"``
    types: frozenset[str]
    #: enum values in schema order (``const`` gives a 1-tuple); ``None`` without an enum
    enum: tuple[object, ...] | None
    #: ``"date-time"`` (decoded to an aware ``datetime``) or ``None``
    format: str | None


class CompiledSchema:
    """A JSON Schema compiled to a msgspec Struct type and its decoder."""

    __slots__ = ("decoder", "fields", "required", "source", "struct")

    def __init__(
        self,
        struct: type[msgspec.Struct],
        fields: Mapping[str, FieldInfo],
        required: frozenset[str],
        source: str,
    ) -> None:
        self.struct = struct
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct)
        self.fields = fields
        self.required = required
        self.source = source

    def field(self, path: str) -> FieldInfo:
        """The field at dotted ``path``; ``ValueError`` naming the known fields otherwise."""
        try:
            return self.fields[path]
        except KeyError:
            known = ", ".join(sorted(self.fields)) or "(none)"
            raise ValueError(f"unknown field {path!r}; known: {known}") from None

    def __repr__(self) -> str:
        return f"CompiledSchema({self.source!r}, fields={len(self.fields)})"
