"""``stream ingest FILE...``: files -> validated events on the input topic, rejects to the DLQ.

Per chunk of a few thousand rows: the source maps rows to event JSON, the
worker's own :class:`~stream.stages.validate.Validator` checks them (so a row
accepted here is never rejected by the worker for the contract), valid events
are queued on the producer keyed like the load generator (by ``source``), and
rejects go to the DLQ with the file and line. Nothing here is per row except
the loops inside the source and the validator.

Checkpoints (every ``checkpoint_interval`` seconds, at the end of each file
and on interruption): flush the producer — which proves every queued row,
valid or rejected, was acknowledged — then save the file's position
(:mod:`connectors.ingest_state`). A failed flush raises ``CheckpointError``
and the position is not advanced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connectors.base import Source, SourceChunk
from connectors.dlq import INGEST_STAGE, ingest_dlq_headers
from connectors.ingest_state import FileProgress, StateStore
from connectors.keys import DEFAULT_KEY, event_keys
from connectors.progress import ProgressLine, ingest_line
from stream.observability import metrics
from stream.stages import Reject
from stream.stages.validate import Validator


class IngestProducer(Protocol):
    """What the ingest needs from :class:`stream.kafka.producer.OutputProducer`."""

    def produce_values(self, topic: str, values: list[bytes], keys: list[bytes | None]) -> None: ...

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int = -1,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
    ) -> None: ...

    def poll(self) -> None: ...

    def flush(self, timeout: float) -> None: ...


@dataclass(frozen=True)
class IngestOptions:
    topic: str
    dlq_topic: str
    #: Part of the resume-state key: the same file into another cluster starts fresh.
    bootstrap: str
    key: str = DEFAULT_KEY
    checkpoint_interval: float = 1.0
    flush_timeout: float = 60.0
    restart: bool = False


@dataclass
class FileReport:
    """What happened to one file in this run (counts exclude rows of earlier runs)."""

    path: str
    accepted: int = 0
    rejected: int = 0
    resumed_from: int = 0
    already_done: bool = False
    finished: bool = False

    @property
    def rows(self) -> int:
        return self.accepted + self.rejected


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    interrupted: bool = False

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def rows(self) -> int:
        return self.accepted + self.rejected

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class FileIngest:
    """Runs sources through validation into Kafka with resumable checkpoints."""

    def __init__(
        self,
        producer: IngestProducer,
        validator: Validator,
        store: StateStore,
        options: IngestOptions,
        *,
        progress: ProgressLine | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._validator = validator
        self._store = store
        self._options = options
        self._progress = progress
        self._stop = stop or threading.Event()
        self._clock = clock
        self._produced = metrics.events_produced_total.labels(options.topic)
        self._dlq_count = metrics.dlq_records_total.labels(stage=INGEST_STAGE)
        self._started = 0.0
        self._total_bytes = 0
        self._bytes_before = 0

    def run(self, sources: Sequence[Source]) -> IngestReport:
        report = IngestReport()
        self._started = self._clock()
        self._total_bytes = sum(source.size for source in sources)
        for source in sources:
            file_report = self._ingest(source, report)
            report.files.append(file_report)
            self._bytes_before += source.size
            if self._stop.is_set():
                report.interrupted = True
                break
        report.seconds = self._clock() - self._started
        report.bytes = self._bytes_before
        if self._progress is not None:
            self._show(report, None, force=True)
            self._progress.finish()
        return report

    def _ingest(self, source: Source, report: IngestReport) -> FileReport:
        opts = self._options
        state = self._store.start(source.path, opts.topic, opts.bootstrap, restart=opts.restart)
        file_report = FileReport(str(source.path), resumed_from=state.record)
        if state.done and state.offset >= source.size:
            file_report.already_done = file_report.finished = True
            return file_report
        state.done = False
        last_checkpoint = self._clock()
        for chunk in source.chunks(state.position):
            accepted, rejected = self._send(chunk, str(source.path))
            file_report.accepted += accepted
            file_report.rejected += rejected
            state.accepted += accepted
            state.rejected += rejected
            pos = chunk.position
            state.offset, state.line, state.record = pos.offset, pos.line, pos.record
            if self._clock() - last_checkpoint >= opts.checkpoint_interval:
                self._checkpoint(state)
                last_checkpoint = self._clock()
            if self._progress is not None:
                self._show(report, file_report, bytes_done=pos.offset)
            if self._stop.is_set():
                self._checkpoint(state)
                return file_report
        state.done = True
        state.offset = max(state.offset, source.size)
        self._checkpoint(state)
        file_report.finished = True
        return file_report

    def _send(self, chunk: SourceChunk, source_file: str) -> tuple[int, int]:
        """Validate and queue one chunk; returns (accepted, rejected)."""
        values = chunk.values
        result = self._validator.validate(values)
        events = result.events
        if events:
            good = values if not result.rejects else [values[i] for i in result.indices]
            keys = event_keys(events, self._options.key)
            self._producer.produce_values(self._options.topic, good, keys)
            self._produced.inc(len(events))
        rejected = len(result.rejects) + len(chunk.malformed)
        if rejected:
            self._reject(chunk, result.rejects, source_file)
        self._producer.poll()
        return len(events), rejected

    def _reject(self, chunk: SourceChunk, rejects: Sequence[Reject], source_file: str) -> None:
        opts = self._options
        produce = self._producer.produce
        counts: dict[str, int] = {}
        lines = chunk.lines
        for reject in chunk.malformed:
            headers = ingest_dlq_headers(
                target_topic=opts.topic,
                error_class=reject.error_class,
                message=reject.message,
                source_file=source_file,
                line=reject.line,
            )
            produce(opts.dlq_topic, reject.raw, None, headers=headers)
            counts[reject.error_class] = counts.get(reject.error_class, 0) + 1
        for position, error_class, message in rejects:
            headers = ingest_dlq_headers(
                target_topic=opts.topic,
                error_class=error_class,
                message=message,
                source_file=source_file,
                line=lines[position] if lines is not None else None,
                record=chunk.first_record + position if lines is None else None,
            )
            produce(opts.dlq_topic, chunk.values[position] or b"", None, headers=headers)
            counts[error_class] = counts.get(error_class, 0) + 1
        for error_class, count in counts.items():
            metrics.events_rejected_total.labels(stage=INGEST_STAGE, error_class=error_class).inc(
                count
            )
        self._dlq_count.inc(sum(counts.values()))

    def _checkpoint(self, state: FileProgress) -> None:
        self._producer.flush(self._options.flush_timeout)
        self._store.save(state)

    def _show(
        self,
        report: IngestReport,
        current: FileReport | None,
        *,
        bytes_done: int = 0,
        force: bool = False,
    ) -> None:
        assert self._progress is not None
        if not (force or self._progress.due()):
            return
        files = [*report.files, *([current] if current is not None else [])]
        rows = sum(f.rows for f in files)
        rejected = sum(f.rejected for f in files)
        done = self._bytes_before + bytes_done
        elapsed = self._clock() - self._started
        line = ingest_line(rows, rejected, done, self._total_bytes, elapsed, self._progress.tty)
        self._progress.show(line, force=force)
