"""File ingest logic with a recording producer: counts, DLQ headers, and the checkpoint rule.

The producer here is a stand-in that records what would be sent and lets a
test decide when "the broker acknowledged" (``flush``) succeeds, so the rule
"progress is saved only after an acknowledged flush" is checked exactly. The
real broker path is in tests/integration/test_connectors_ingest.py.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

import tests.support.observability as obs
from connectors.csv_source import CsvSource
from connectors.file_ingest import FileIngest, IngestOptions
from connectors.ingest_state import StateStore, fingerprint
from connectors.mapping import ColumnMapping
from connectors.progress import ProgressLine, human_bytes, human_duration, ingest_line
from stream.errors import CheckpointError, ConfigError
from stream.kafka import headers as h

T0 = 1_700_000_000_000
HEADER = "event_id,type,source,timestamp,severity\n"


class RecordingProducer:
    """Queues like a producer; ``flush`` "acknowledges" the queue unless told to fail."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.acked: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.fail_flush = False
        self.flushes = 0

    def produce_values(self, topic: str, values: list[bytes], keys: list[bytes | None]) -> None:
        self.queued.extend((topic, v, k, []) for v, k in zip(values, keys, strict=True))

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None, **kw: object
    ) -> None:
        headers = kw.get("headers") or []
        self.queued.append((topic, value, key, list(headers)))  # type: ignore[arg-type]

    def poll(self) -> None:
        pass

    def flush(self, timeout: float) -> None:
        self.flushes += 1
        if self.fail_flush:
            raise CheckpointError("3 records not acknowledged within 1s")
        self.acked.extend(self.queued)
        self.queued.clear()

    def on(self, topic: str) -> list[bytes | None]:
        return [v for t, v, _, _ in self.acked if t == topic]


def csv_file(tmp_path: Path, rows: int, bad_every: int = 0) -> Path:
    lines = []
    for i in range(rows):
        severity = "loud" if bad_every and i % bad_every == 0 else "info"
        lines.append(f"e{i},t,svc-{i % 4},{T0 + i},{severity}\n")
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "".join(lines))
    return path


def make_ingest(
    producer: RecordingProducer,
    store: StateStore,
    *,
    stop: threading.Event | None = None,
    restart: bool = False,
) -> FileIngest:
    options = IngestOptions(
        topic="events",
        dlq_topic="events.dlq",
        bootstrap="b:9092",
        checkpoint_interval=3600.0,  # only end-of-file / interruption checkpoints
        restart=restart,
    )
    return FileIngest(producer, obs.validator(), store, options, stop=stop)


def test_valid_rows_go_to_the_topic_keyed_by_source_and_rejects_to_the_dlq(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 1_000, bad_every=100)
    producer = RecordingProducer()
    report = make_ingest(producer, StateStore(tmp_path / "state")).run(
        [CsvSource(path, ColumnMapping())]
    )
    assert (report.accepted, report.rejected, report.interrupted) == (990, 10, False)
    events = producer.on("events")
    assert len(events) == 990
    assert {k for t, _, k, _ in producer.acked if t == "events"} == {
        b"svc-0",
        b"svc-1",
        b"svc-2",
        b"svc-3",
    }
    dlq = [r for r in producer.acked if r[0] == "events.dlq"]
    assert len(dlq) == 10
    _, value, key, headers = dlq[1]
    assert key is None
    assert json.loads(value or b"")["event_id"] == "e100"
    found = dict(headers)
    assert found[h.DLQ_ORIGINAL_TOPIC] == b"events"
    assert found[h.DLQ_ORIGINAL_PARTITION] == b"-1"
    assert found[h.DLQ_ERROR_CLASS] == b"schema_violation"
    assert found[h.DLQ_STAGE] == b"ingest"
    assert found["dlq.source.file"] == str(path).encode()
    assert found["dlq.source.line"] == b"102"  # header is line 1, e0 line 2, e100 line 102


def test_progress_is_saved_only_after_an_acknowledged_flush(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 100)
    store = StateStore(tmp_path / "state")
    producer = RecordingProducer()
    producer.fail_flush = True
    with pytest.raises(CheckpointError):
        make_ingest(producer, store).run([CsvSource(path, ColumnMapping())])
    assert store.load(path, "events", "b:9092") is None  # nothing recorded: rerun starts over
    producer = RecordingProducer()
    report = make_ingest(producer, store).run([CsvSource(path, ColumnMapping())])
    assert report.accepted == 100
    saved = store.load(path, "events", "b:9092")
    assert saved is not None and saved.done and saved.record == 100


def test_interrupted_run_resumes_without_duplicates_and_finished_files_are_skipped(
    tmp_path: Path,
) -> None:
    path = csv_file(tmp_path, 30_000)
    store = StateStore(tmp_path / "state")
    stop = threading.Event()
    first = RecordingProducer()
    original_produce = first.produce_values

    def produce_then_stop(topic: str, values: list[bytes], keys: list[bytes | None]) -> None:
        original_produce(topic, values, keys)
        stop.set()  # "Ctrl-C" after the first chunk

    first.produce_values = produce_then_stop  # type: ignore[method-assign]
    source = CsvSource(path, ColumnMapping(), chunk_bytes=64 * 1024)
    report = make_ingest(first, store, stop=stop).run([source])
    assert report.interrupted and 0 < report.accepted < 30_000
    assert not first.queued  # the interruption checkpoint flushed everything

    second = RecordingProducer()
    resumed = make_ingest(second, store).run([CsvSource(path, ColumnMapping())])
    assert resumed.files[0].resumed_from == report.accepted
    ids = [json.loads(v or b"")["event_id"] for v in first.on("events") + second.on("events")]
    assert ids == [f"e{i}" for i in range(30_000)]

    third = RecordingProducer()
    again = make_ingest(third, store).run([CsvSource(path, ColumnMapping())])
    assert again.files[0].already_done and third.acked == []


def test_appended_file_resumes_after_the_old_end_and_changed_file_is_refused(
    tmp_path: Path,
) -> None:
    path = csv_file(tmp_path, 10)
    store = StateStore(tmp_path / "state")
    make_ingest(RecordingProducer(), store).run([CsvSource(path, ColumnMapping())])
    with path.open("a") as f:
        f.write(f"e10,t,svc,{T0},info\n")
    producer = RecordingProducer()
    report = make_ingest(producer, store).run([CsvSource(path, ColumnMapping())])
    assert report.accepted == 1
    assert json.loads(producer.on("events")[0] or b"")["event_id"] == "e10"

    path.write_text(HEADER + f"x1,t,svc,{T0},info\n")
    with pytest.raises(ConfigError, match=r"changed since an earlier run.*--restart"):
        make_ingest(RecordingProducer(), store).run([CsvSource(path, ColumnMapping())])
    producer = RecordingProducer()
    report = make_ingest(producer, store, restart=True).run([CsvSource(path, ColumnMapping())])
    assert report.accepted == 1


def test_state_file_is_per_file_topic_and_cluster(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    path = csv_file(tmp_path, 1)
    a = store.path_for(path, "events", "b:9092")
    assert a != store.path_for(path, "other", "b:9092")
    assert a != store.path_for(path, "events", "c:9092")
    assert a.name.startswith("events.csv.")
    digest, length = fingerprint(path)
    assert len(digest) == 64 and length == path.stat().st_size


def test_progress_line_formats_and_only_redraws_on_a_terminal() -> None:
    line = ingest_line(1_234_567, 12, 50 * 1024**2, 100 * 1024**2, 10.0, tty=True)
    assert line == (
        "[############------------]  50%  1,234,567 rows (12 rejected)  "
        "50.0 MB/100.0 MB  123,457 rows/s  ETA 10s"
    )
    assert not ingest_line(10, 0, 5, 10, 1.0, tty=False).startswith("[")
    assert human_bytes(512) == "512 B" and human_duration(3_725) == "1h02m"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    progress = ProgressLine(out, interval=0.0)
    progress.show("a")
    progress.show("b")
    progress.finish()
    assert out.getvalue() == "\ra\x1b[K\rb\x1b[K\n"
    log = io.StringIO()
    progress = ProgressLine(log, interval=0.0)
    progress.show("a")
    progress.finish()
    assert log.getvalue() == "a\n"
    quiet = io.StringIO()
    ProgressLine(quiet, enabled=False, interval=0.0).show("a")
    assert quiet.getvalue() == ""
