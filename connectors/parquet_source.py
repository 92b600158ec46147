"""Parquet source (needs pyarrow: ``pip install 'stream-processor[parquet]'``).

Parquet columns are typed, so values keep their types; the few Arrow types
JSON cannot carry as the contract wants are converted per batch, in C:
timestamps and dates become epoch milliseconds (a timestamp without a time
zone is taken as UTC), decimals become floats. Nulls are left out of the
event. Only the mapped columns are read. Resuming skips whole row groups by
their metadata, so a restart near the end of a big file is immediate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from connectors.base import Position, Source, SourceChunk, SourceError
from connectors.mapping import ColumnMapping
from connectors.optional import require

#: Rows per Arrow record batch.
BATCH_ROWS: Final = 10_000


class ParquetSource(Source):
    """A Parquet file; one row per event."""

    name = "parquet"

    def __init__(self, path: Path, mapping: ColumnMapping, *, batch_rows: int = BATCH_ROWS) -> None:
        super().__init__(path)
        pq = require("pyarrow.parquet", extra="parquet", purpose="reading Parquet files")
        try:
            self._file: Any = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise SourceError(f"{path} is not a readable Parquet file: {exc}") from None
        columns = list(self._file.schema_arrow.names)
        resolved = mapping.resolve(columns, str(path))
        self._keys = [(target, columns[i]) for target, i in resolved.positions.items()]
        self._attributes = [(name, columns[i]) for name, i in resolved.attributes.items()]
        self._batch_rows = batch_rows
        self.rows = int(self._file.metadata.num_rows)

    def chunks(self, start: Position) -> Iterator[SourceChunk]:
        metadata = self._file.metadata
        skip = start.record
        first_group = 0
        while first_group < metadata.num_row_groups:
            group_rows = metadata.row_group(first_group).num_rows
            if skip < group_rows:
                break
            skip -= group_rows
            first_group += 1
        groups = list(range(first_group, metadata.num_row_groups))
        if not groups:
            return
        names = sorted({column for _, column in (*self._keys, *self._attributes)})
        record = start.record - skip
        size = self.size
        for batch in self._file.iter_batches(
            batch_size=self._batch_rows, row_groups=groups, columns=names
        ):
            rows = batch.num_rows
            if skip:
                drop = min(skip, rows)
                batch = batch.slice(drop)
                record += drop
                skip -= drop
                if batch.num_rows == 0:
                    continue
            values = self._encode(batch)
            first = record + 1
            record += len(values)
            done = size * record // max(self.rows, 1)
            yield SourceChunk(values, None, first, [], Position(done, 0, record))

    def _encode(self, batch: Any) -> list[bytes]:
        columns = {name: _json_ready(batch.column(name)).to_pylist() for name in batch.schema.names}
        keys = [target for target, _ in self._keys]
        key_columns = [columns[column] for _, column in self._keys]
        attribute_names = [name for name, _ in self._attributes]
        attribute_columns = [columns[column] for _, column in self._attributes]
        encode = msgspec.json.encode
        values: list[bytes] = []
        for i, row in enumerate(zip(*key_columns, strict=True)):
            event = {k: v for k, v in zip(keys, row, strict=True) if v is not None}
            if attribute_columns:
                attributes = {
                    name: column[i]
                    for name, column in zip(attribute_names, attribute_columns, strict=True)
                    if column[i] is not None
                }
                if attributes:
                    event["attributes"] = attributes
            values.append(encode(event))
        return values


def _json_ready(array: Any) -> Any:
    """Convert Arrow types the event contract cannot take as they are."""
    pa = require("pyarrow", extra="parquet", purpose="reading Parquet files")
    kind = array.type
    types = pa.types
    if types.is_timestamp(kind):
        return array.cast(pa.timestamp("ms", tz=kind.tz), safe=False).cast(pa.int64())
    if types.is_date(kind):
        return array.cast(pa.timestamp("ms")).cast(pa.int64())
    if types.is_decimal(kind):
        return array.cast(pa.float64())
    return array
