"""How well records fit a compiled schema (``stream schema check``).

Before a schema goes into a pipeline, its owner wants to know what it would send
to the DLQ. Each record is decoded exactly as the worker would (the compiled
decoder, one pass) to count valid and rejected records and their reasons, and,
separately, each field's value is checked on its own against that field's type, so
a field that is often wrong shows up even when another error stops the record's
decode first.

Per field: *present* (the key exists), *non-null* (exists and is not null), and
*valid* (of the present values, how many the field's type accepts). Rejection
reasons are msgspec's messages with array indices folded (``$.items[*].qty``) and
enum values dropped, so one cause counts once.
"""

from __future__ import annotations

import re
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from stream.schema.model import CompiledSchema

_INDEX = re.compile(r"\[\d+\]")
_ENUM_VALUE = re.compile(r"^Invalid enum value .*? - at ")


def reason_key(message: str) -> str:
    """A rejection message with what varies per record folded away."""
    folded = _INDEX.sub("[*]", message)
    return _ENUM_VALUE.sub("Invalid enum value - at ", folded)


def _nested_struct(tp: Any) -> type[msgspec.Struct] | None:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    for arg in typing.get_args(tp):
        found = _nested_struct(arg)
        if found is not None:
            return found
    return None


def field_types(struct: type[msgspec.Struct], prefix: str = "") -> dict[str, Any]:
    """``{dotted JSON path: msgspec type}`` for every property, nested objects included."""
    out: dict[str, Any] = {}
    for info in msgspec.structs.fields(struct):
        path = f"{prefix}.{info.encode_name}" if prefix else info.encode_name
        out[path] = info.type
        nested = _nested_struct(info.type)
        if nested is not None:
            out.update(field_types(nested, path))
    return out


@dataclass
class FieldCounts:
    present: int = 0
    non_null: int = 0
    valid: int = 0


@dataclass
class SchemaCheck:
    """Accumulates the fit of raw record values to ``schema``."""

    schema: CompiledSchema
    samples_per_reason: int = 1
    records: int = 0
    valid: int = 0
    #: records with no value (tombstones) or a value that is not JSON
    not_json: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    fields: dict[str, FieldCounts] = field(init=False)

    def __post_init__(self) -> None:
        types = field_types(self.schema.struct)
        self._paths = [(path, tuple(path.split("."))) for path in self.schema.fields]
        self._decoders = {path: msgspec.json.Decoder(types[path]) for path, _ in self._paths}
        self.fields = {path: FieldCounts() for path, _ in self._paths}

    @property
    def rejected(self) -> int:
        return self.records - self.valid

    def add(self, value: bytes | None) -> bool:
        """Check one record value; ``True`` when the worker would accept it."""
        self.records += 1
        if value is None:
            self.not_json += 1
            self._reject("no value (tombstone)", "")
            return False
        try:
            self.schema.decoder.decode(value)
            ok = True
        except msgspec.ValidationError as exc:
            ok = False
            self._reject(reason_key(str(exc)), value)
        except msgspec.DecodeError as exc:
            self.not_json += 1
            self._reject(f"not JSON: {exc}", value)
            return False
        self.valid += ok
        try:
            doc = msgspec.json.decode(value)
        except msgspec.DecodeError:  # pragma: no cover - the decoder above parsed it
            return ok
        if isinstance(doc, dict):
            self._count_fields(doc)
        return ok

    def _reject(self, reason: str, value: bytes | str) -> None:
        self.reasons[reason] += 1
        kept = self.samples.setdefault(reason, [])
        if len(kept) < self.samples_per_reason:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            kept.append(text[:300])

    def _count_fields(self, doc: dict[str, Any]) -> None:
        for path, keys in self._paths:
            node: Any = doc
            for key in keys:
                if not isinstance(node, dict) or key not in node:
                    break
                node = node[key]
            else:
                counts = self.fields[path]
                counts.present += 1
                if node is not None:
                    counts.non_null += 1
                try:
                    self._decoders[path].decode(msgspec.json.encode(node))
                    counts.valid += 1
                except msgspec.ValidationError:
                    pass

    def to_json(self, top: int = 5) -> dict[str, Any]:
        return {
            "schema": self.schema.source,
            "records": self.records,
            "valid": self.valid,
            "rejected": self.rejected,
            "not_json": self.not_json,
            "fields": {
                path: {"present": c.present, "non_null": c.non_null, "valid": c.valid}
                for path, c in self.fields.items()
            },
            "top_reasons": [
                {"reason": reason, "count": count, "samples": self.samples.get(reason, [])}
                for reason, count in self.reasons.most_common(top)
            ],
        }

    def render(self, title: str, top: int = 5) -> str:
        n = self.records
        lines = [
            f"{title}: {n:,} records checked against {self.schema.source}: "
            f"{self.valid:,} valid ({_pct(self.valid, n)}), {self.rejected:,} rejected"
            + (f" ({self.not_json:,} empty or not JSON)" if self.not_json else ""),
            "",
        ]
        width = max([len("field"), *(len(p) for p in self.fields)])
        lines.append(f"{'field':<{width}}  {'present':>8}  {'non-null':>8}  {'valid':>8}  invalid")
        for path, c in self.fields.items():
            valid = _pct(c.valid, c.present) if c.present else "-"
            lines.append(
                f"{path:<{width}}  {_pct(c.present, n):>8}  {_pct(c.non_null, n):>8}  "
                f"{valid:>8}  {c.present - c.valid:,}"
            )
        if self.reasons:
            lines += ["", "top rejection reasons:"]
            for reason, count in self.reasons.most_common(top):
                lines.append(f"  {count:>8,}  {reason}")
                for sample in self.samples.get(reason, []):
                    lines.append(f"            e.g. {sample}")
        return "\n".join(lines)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"
