"""The two connector contracts: a :class:`Source` reads rows, a :class:`Sink` writes records.

Both move *batches*, never single records (DESIGN.md §2), and both take part
in checkpoints the same way the worker does:

* A source yields :class:`SourceChunk` s, each ending at a :class:`Position`
  the caller can resume from. The caller (``connectors.file_ingest``)
  records a position only after the producer has acknowledged every row
  before it, so a restart skips exactly the rows already in Kafka.
* A sink receives record batches through :meth:`Sink.add` and makes them
  durable in :meth:`Sink.flush`, which the runner (``connectors.sink_runner``)
  calls at each checkpoint *before* committing offsets. An exception from
  ``flush`` aborts the checkpoint: nothing is committed and the records are
  kept (or re-read) until a later flush succeeds. A sink that cannot take
  more right now raises :class:`stream.errors.BackpressureError` with a
  ``retry_after``; the runner pauses consumption instead of failing.

Sinks get confluent-kafka ``Message`` objects as they come from the consumer
(no per-record wrapper); :class:`Record` names the part they may use, so tests
can pass plain objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, NamedTuple, Protocol

from stream.errors import FatalError
from stream.stages import Reject


class SourceError(FatalError):
    """A file cannot be read as the format it claims (not JSON, not Parquet, ...)."""


class Position(NamedTuple):
    """How far a source has read: where to resume, and how to number what follows.

    ``offset`` is the bytes of the file covered: exact for line-based formats
    (CSV, NDJSON), which resume from it, and an estimate for formats that
    resume by record count (JSON arrays, Parquet), used for progress only.
    ``line`` is the last physical line consumed (0 when lines do not apply);
    ``record`` counts the data records consumed, valid or not.
    """

    offset: int = 0
    line: int = 0
    record: int = 0


class MalformedRow(NamedTuple):
    """A row that could not be turned into an event at all (e.g. wrong column count)."""

    raw: bytes
    line: int
    error_class: str
    message: str


class SourceChunk(NamedTuple):
    """Rows read from one file, mapped to event JSON but not validated yet.

    ``values[i]`` starts at physical line ``lines[i]`` (1-based). Formats without
    lines (JSON arrays, Parquet) set ``lines`` to ``None``; there ``values[i]`` is
    data record ``first_record + i`` (1-based) and that number is its location.
    """

    values: list[bytes]
    lines: Sequence[int] | None
    first_record: int
    malformed: list[MalformedRow]
    position: Position


class Source(ABC):
    """Reads one file as chunks of event JSON values."""

    #: Registry name (``csv``, ``ndjson``, ``json``, ``parquet``).
    name: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def size(self) -> int:
        """Bytes in the file (for progress and ETA)."""
        return self.path.stat().st_size

    @abstractmethod
    def chunks(self, start: Position) -> Iterator[SourceChunk]:
        """Yield the rows after ``start`` in order, in chunks of a few thousand.

        ``start`` is a position a previous chunk of the same file ended at (or
        ``Position()``); the source resumes from whichever of its fields it
        trusts (the byte offset for line formats, the record count otherwise).
        """


class Record(Protocol):
    """The part of a confluent-kafka ``Message`` a sink may use."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class Sink(ABC):
    """Writes record batches to an external system; durable only after :meth:`flush`."""

    #: Registry name (``postgres``, ``file``).
    name: ClassVar[str]

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create what the sink needs; called once before the first batch."""

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:  # noqa: B027
        """Partitions ``(topic, partition)`` now owned by this sink (after a rebalance)."""

    @abstractmethod
    def add(self, batch: Sequence[Record]) -> list[Reject]:
        """Take a batch. Returns the records it can never write (they go to the DLQ).

        May raise :class:`stream.errors.BackpressureError`; the batch was then not
        taken and the runner offers it again after ``retry_after`` seconds.
        """

    @abstractmethod
    def flush(self) -> None:
        """Make every record taken so far durable. Raising aborts the checkpoint."""

    def wants_checkpoint(self) -> bool:
        """True when the sink wants a checkpoint before the next interval (e.g. a file is full)."""
        return False

    @abstractmethod
    def discard(self) -> None:
        """Forget records taken since the last flush (they will be re-read from Kafka)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. Called after the final checkpoint."""

    def summary(self) -> str:
        """One line for the final report (what was written where)."""
        return self.name
