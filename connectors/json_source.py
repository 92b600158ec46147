"""NDJSON and JSON-array sources.

A JSON row already has types, so without a column mapping each line (or
array element) is passed to the validator byte for byte: no decode, no
re-encode. With a mapping each object is decoded, its keys renamed and
re-encoded (~2 µs per row). Anything that is not a JSON object is passed on
unchanged and the validator rejects it with the same error class the worker
would use (``malformed_json``, ``schema_violation``).

NDJSON is read in ~1 MB chunks ending on a newline and resumes by byte
offset. A JSON array is parsed whole (msgspec keeps each element as raw
bytes, so that costs one pass) and resumes by element count; use NDJSON for
files that do not fit in memory. A ``.json`` file whose first character is
not ``[`` is read as NDJSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from connectors.base import Position, Source, SourceChunk, SourceError
from connectors.chunks import CHUNK_BYTES, line_boundary, read_chunks
from connectors.mapping import ColumnMapping

#: Array elements per chunk.
ELEMENTS_PER_CHUNK: Final = 10_000

_decode: Final = msgspec.json.decode
_encode: Final = msgspec.json.encode
_raw_array: Final = msgspec.json.Decoder(list[msgspec.Raw])


class JsonRowMapper:
    """Renames the keys of JSON objects per a :class:`ColumnMapping`."""

    def __init__(self, mapping: ColumnMapping) -> None:
        self._fields = [(column, target) for target, column in mapping.fields.items()]
        self._attributes = [(column, name) for name, column in mapping.attributes.items()]
        targets = set(mapping.fields)
        self._drop = {c for c, _ in (*self._fields, *self._attributes) if c not in targets}

    def remap(self, raw: bytes) -> bytes:
        try:
            row = _decode(raw)
        except msgspec.DecodeError:
            return raw
        if not isinstance(row, dict):
            return raw
        return _encode(self._rename(row))

    def _rename(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k not in self._drop}
        for column, target in self._fields:
            if column in row:
                out[target] = row[column]
        if self._attributes:
            existing = out.get("attributes")
            attributes: dict[str, Any] = dict(existing) if isinstance(existing, Mapping) else {}
            for column, name in self._attributes:
                if column in row:
                    attributes[name] = row[column]
            out["attributes"] = attributes
        return out


def split_lines(raw: bytes, base_line: int) -> tuple[list[bytes], list[int] | range]:
    """Non-blank lines of ``raw`` and their 1-based line numbers (``base_line`` lines precede)."""
    parts = raw.split(b"\n")
    if parts and not parts[-1]:
        parts.pop()
    if b"\r" not in raw and b"\n\n" not in raw and (not parts or parts[0]):
        return parts, range(base_line + 1, base_line + 1 + len(parts))
    values: list[bytes] = []
    lines: list[int] = []
    for i, part in enumerate(parts):
        if part.endswith(b"\r"):
            part = part[:-1]
        if part.strip():
            values.append(part)
            lines.append(base_line + 1 + i)
    return values, lines


class NdjsonSource(Source):
    """One JSON object per line."""

    name = "ndjson"

    def __init__(
        self, path: Path, mapping: ColumnMapping, *, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        super().__init__(path)
        self._mapper = None if mapping.is_identity else JsonRowMapper(mapping)
        self._chunk_bytes = chunk_bytes

    def chunks(self, start: Position) -> Iterator[SourceChunk]:
        line, record = start.line, start.record
        remap = self._mapper.remap if self._mapper is not None else None
        with self.path.open("rb") as file:
            for raw, end in read_chunks(file, start.offset, line_boundary, self._chunk_bytes):
                values, lines = split_lines(raw, line)
                if remap is not None:
                    values = [remap(v) for v in values]
                first = record + 1
                line += raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
                record += len(values)
                yield SourceChunk(values, lines, first, [], Position(end, line, record))


class JsonSource(Source):
    """A JSON array of event objects (or NDJSON saved with a ``.json`` name)."""

    name = "json"

    def __init__(self, path: Path, mapping: ColumnMapping) -> None:
        super().__init__(path)
        self._mapping = mapping
        self._mapper = None if mapping.is_identity else JsonRowMapper(mapping)
        with path.open("rb") as file:
            head = file.read(4096).lstrip()
        self.is_array = head.startswith(b"[")

    def chunks(self, start: Position) -> Iterator[SourceChunk]:
        if not self.is_array:
            yield from NdjsonSource(self.path, self._mapping).chunks(start)
            return
        try:
            elements = _raw_array.decode(self.path.read_bytes())
        except msgspec.DecodeError as exc:
            raise SourceError(f"{self.path} is not a JSON array of events: {exc}") from None
        remap = self._mapper.remap if self._mapper is not None else None
        size = self.size
        total = len(elements)
        for first in range(start.record, total, ELEMENTS_PER_CHUNK):
            last = min(first + ELEMENTS_PER_CHUNK, total)
            values = [bytes(element) for element in elements[first:last]]
            if remap is not None:
                values = [remap(v) for v in values]
            done = size if last == total else size * last // total
            yield SourceChunk(values, None, first + 1, [], Position(done, 0, last))
