"""File sink: a topic -> rolling NDJSON or Parquet files, exactly once per offset.

Each partition writes to its own file, named after the first offset in it::

    <dir>/<topic>-<partition>-<first offset, 20 digits>.ndjson   (or .parquet)

While a file is open it lives under a hidden temporary name
(``.<name>.tmp``); at a checkpoint every open file is flushed, fsynced and
renamed to its final name (``os.replace``, atomic), the directory is
fsynced, and only then does the runner commit the offsets. So:

* readers that ignore dot-files never see a partial file;
* after a crash, consumption restarts at the committed offset — which is the
  first offset of the file that was being written — so the replay writes a
  file of the *same name* and the rename replaces whatever the crashed run
  left (a renamed file whose offsets were not committed yet, or nothing):
  no record appears in two files.

Checkpoints happen when a file reaches ``roll_bytes`` or ``roll_seconds``
(the sink asks for one through :meth:`FileSink.wants_checkpoint`), on
rebalance and on shutdown; all open files roll together, so a partition has
at most one file between two commits. NDJSON lines are the record values as
they are (one JSON document per line); Parquet files have the columns
``partition, offset, timestamp_ms, key, value`` (value as UTF-8 JSON text), a
schema that does not depend on what the events contain.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from connectors.base import Record, Sink
from connectors.optional import require
from stream.errors import CheckpointError, ConfigError
from stream.stages import Reject

Format = Literal["ndjson", "parquet"]
FORMATS: Final = ("ndjson", "parquet")
OFFSET_DIGITS: Final = 20


def final_name(topic: str, partition: int, first_offset: int, fmt: str) -> str:
    return f"{topic}-{partition}-{first_offset:0{OFFSET_DIGITS}d}.{fmt}"


def temporary_name(name: str) -> str:
    return f".{name}.tmp"


class _OpenFile:
    """Records of one partition since the last checkpoint, on their way into one file."""

    def __init__(self, directory: Path, name: str, fmt: str, opened_at: float) -> None:
        self.final = directory / name
        self.tmp = directory / temporary_name(name)
        self.fmt = fmt
        self.opened_at = opened_at
        self.bytes = 0
        self.records = 0
        self.committed = False
        self._file: Any = self.tmp.open("wb") if fmt == "ndjson" else None
        self._columns: dict[str, list[Any]] = {
            "partition": [],
            "offset": [],
            "timestamp_ms": [],
            "key": [],
            "value": [],
        }

    def write(self, records: list[Record], values: list[bytes]) -> None:
        self.records += len(values)
        if self._file is not None:
            data = b"\n".join(values) + b"\n"
            self._file.write(data)
            self.bytes += len(data)
            return
        columns = self._columns
        for record, value in zip(records, values, strict=True):
            columns["partition"].append(record.partition())
            columns["offset"].append(record.offset())
            columns["timestamp_ms"].append(record.timestamp()[1])
            columns["key"].append(record.key())
            columns["value"].append(value.decode("utf-8", "replace"))
            self.bytes += len(value)

    def commit(self) -> None:
        """Make the file complete and durable under its temporary name, then rename it."""
        if self.committed:
            return
        if self.fmt == "ndjson":
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
        else:
            self._write_parquet()
        os.replace(self.tmp, self.final)
        self.committed = True

    def _write_parquet(self) -> None:
        pa = require("pyarrow", extra="parquet", purpose="writing Parquet files")
        pq = require("pyarrow.parquet", extra="parquet", purpose="writing Parquet files")
        c = self._columns
        table = pa.table(
            {
                "partition": pa.array(c["partition"], pa.int32()),
                "offset": pa.array(c["offset"], pa.int64()),
                "timestamp_ms": pa.array(c["timestamp_ms"], pa.int64()),
                "key": pa.array(c["key"], pa.binary()),
                "value": pa.array(c["value"], pa.string()),
            }
        )
        pq.write_table(table, self.tmp, compression="zstd")
        with self.tmp.open("rb") as written:
            os.fsync(written.fileno())

    def abandon(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.committed:
            self.tmp.unlink(missing_ok=True)


class FileSink(Sink):
    """Rolling files in one directory; see the module docstring for the naming rules."""

    name = "file"

    def __init__(
        self,
        directory: Path | str,
        *,
        fmt: str = "ndjson",
        roll_bytes: int = 64 * 1024 * 1024,
        roll_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fmt not in FORMATS:
            raise ConfigError("--format", f"must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if fmt == "parquet":
            require("pyarrow.parquet", extra="parquet", purpose="writing Parquet files")
        if roll_bytes <= 0:
            raise ConfigError("--roll-size", "must be > 0")
        if roll_seconds <= 0:
            raise ConfigError("--roll-seconds", "must be > 0")
        self.directory = Path(directory)
        self.fmt = fmt
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self._clock = clock
        self._open: dict[tuple[str, int], _OpenFile] = {}
        self.files_written = 0
        self.records_written = 0
        self.skipped_tombstones = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FileSink:
        """``file:///data/out`` (the registry's URL form); options as keywords."""
        return cls(url.removeprefix("file://"), **options)

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("--dir", f"cannot create {self.directory}: {exc.strerror}") from None

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Delete temporary files a crashed owner of these partitions left behind."""
        for topic, partition in partitions:
            for stale in self.directory.glob(f".{topic}-{partition}-*.{self.fmt}.tmp"):
                stale.unlink(missing_ok=True)

    def add(self, batch: Sequence[Record]) -> list[Reject]:
        groups: dict[tuple[str, int], tuple[list[Record], list[bytes]]] = {}
        for record in batch:
            value = record.value()
            if value is None:
                self.skipped_tombstones += 1
                continue
            if b"\n" in value:  # only whitespace between JSON tokens; keep one line per record
                value = value.replace(b"\r\n", b" ").replace(b"\n", b" ")
            key = (record.topic() or "", record.partition() or 0)
            group = groups.get(key)
            if group is None:
                group = groups[key] = ([], [])
            group[0].append(record)
            group[1].append(value)
        for key, (records, values) in groups.items():
            handle = self._open.get(key)
            if handle is None:
                topic, partition = key
                name = final_name(topic, partition, records[0].offset() or 0, self.fmt)
                handle = _OpenFile(self.directory, name, self.fmt, self._clock())
                self._open[key] = handle
            handle.write(records, values)
        return []

    def wants_checkpoint(self) -> bool:
        now = self._clock()
        return any(
            f.bytes >= self.roll_bytes or now - f.opened_at >= self.roll_seconds
            for f in self._open.values()
        )

    def flush(self) -> None:
        if not self._open:
            return
        try:
            for handle in self._open.values():
                handle.commit()
            _fsync_directory(self.directory)
        except OSError as exc:
            raise CheckpointError(f"cannot write files in {self.directory}: {exc}") from None
        self.files_written += len(self._open)
        self.records_written += sum(f.records for f in self._open.values())
        self._open.clear()

    def discard(self) -> None:
        for handle in self._open.values():
            handle.abandon()
        self._open.clear()

    def close(self) -> None:
        self.discard()

    def summary(self) -> str:
        return (
            f"{self.records_written:,} records in {self.files_written:,} {self.fmt} files "
            f"in {self.directory}"
        )


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (a rename is a change to the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
