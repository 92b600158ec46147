"""Column mapping: which column of a file feeds which field of the event contract.

``--map event_id=id,source=service,attributes.region=dc`` renames; every
contract field not mapped is read from a column of the same name if there is
one (so a file already shaped like the contract needs no mapping). Columns
named ``attributes.<name>`` become attributes without mapping. Other columns
are ignored. A required field (``event_id``, ``type``, ``source``,
``timestamp``, ``severity``) without a column fails before any row is read,
naming the columns that do exist: a typo in a mapping should cost one second,
not a DLQ full of rejects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from stream.errors import ConfigError

REQUIRED: Final = ("event_id", "type", "source", "timestamp", "severity")
OPTIONAL: Final = ("entity", "value", "trace_id")
CONTRACT_FIELDS: Final = REQUIRED + OPTIONAL
ATTRIBUTE_PREFIX: Final = "attributes."


@dataclass(frozen=True)
class ColumnMapping:
    """Target field -> source column, as given by the user (before looking at a file)."""

    fields: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> ColumnMapping:
        """Parse ``--map`` values (each ``target=column[,target=column...]``)."""
        fields: dict[str, str] = {}
        attributes: dict[str, str] = {}
        for spec in specs:
            for item in spec.split(","):
                item = item.strip()
                if not item:
                    continue
                target, sep, column = item.partition("=")
                target, column = target.strip(), column.strip()
                if not sep or not target or not column:
                    raise ConfigError("--map", f"{item!r} is not TARGET=COLUMN")
                if target.startswith(ATTRIBUTE_PREFIX) and len(target) > len(ATTRIBUTE_PREFIX):
                    attributes[target[len(ATTRIBUTE_PREFIX) :]] = column
                elif target in CONTRACT_FIELDS:
                    fields[target] = column
                else:
                    raise ConfigError(
                        "--map",
                        f"unknown target field {target!r}; use one of "
                        f"{', '.join(CONTRACT_FIELDS)} or attributes.<name>",
                    )
        return cls(fields, attributes)

    @property
    def is_identity(self) -> bool:
        """True when nothing is renamed (JSON rows can then pass through untouched)."""
        return not self.fields and not self.attributes

    def resolve(self, columns: Sequence[str], where: str) -> ResolvedMapping:
        """Column positions for ``columns`` (a CSV header, a Parquet schema); ``where`` names it."""
        index = {name: i for i, name in enumerate(columns)}
        missing_user = [
            c for c in (*self.fields.values(), *self.attributes.values()) if c not in index
        ]
        if missing_user:
            raise ConfigError(
                "--map",
                f"{where} has no column {missing_user[0]!r} (columns: {_listing(columns)})",
            )
        positions: dict[str, int] = {}
        for target in CONTRACT_FIELDS:
            column = self.fields.get(target, target)
            if column in index:
                positions[target] = index[column]
        missing = [t for t in REQUIRED if t not in positions]
        if missing:
            raise ConfigError(
                "--map",
                f"{where} has no column for required field {missing[0]!r} "
                f"(columns: {_listing(columns)}); map one with --map {missing[0]}=COLUMN",
            )
        attributes = {name: index[column] for name, column in self.attributes.items()}
        for i, name in enumerate(columns):
            if name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX):
                attributes.setdefault(name[len(ATTRIBUTE_PREFIX) :], i)
        return ResolvedMapping(positions, attributes, len(columns))


@dataclass(frozen=True)
class ResolvedMapping:
    """Contract field -> column position, for one file."""

    positions: Mapping[str, int]
    attributes: Mapping[str, int]
    width: int

    def position(self, target: str) -> int:
        """Column position of ``target``, or -1 when the file has none."""
        return self.positions.get(target, -1)


def _listing(columns: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")
