"""Sink logic without Kafka or a database: file rolling and naming, PostgreSQL payload and checks.

Records are plain objects with the ``Message`` methods a sink uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.file_sink import FileSink, final_name
from connectors.postgres import redact_dsn, table_name
from connectors.postgres_sink import PostgresSink, copy_payload
from stream.errors import ConfigError


@dataclass
class Rec:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _ts: int = 1_700_000_000_000

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


def records(partition: int, first: int, count: int, topic: str = "ev") -> list[Rec]:
    return [
        Rec(topic, partition, o, json.dumps({"event_id": f"p{partition}-{o}"}).encode())
        for o in range(first, first + count)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


# -- file sink -------------------------------------------------------------------------------


def test_open_files_are_hidden_until_flush_renames_them(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, roll_bytes=10**9, roll_seconds=60)
    sink.open()
    assert sink.add(records(0, 100, 3) + records(1, 7, 2)) == []
    assert visible(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".ev-0-00000000000000000100.ndjson.tmp",
        ".ev-1-00000000000000000007.ndjson.tmp",
    ]
    sink.flush()
    assert visible(tmp_path) == [
        "ev-0-00000000000000000100.ndjson",
        "ev-1-00000000000000000007.ndjson",
    ]
    lines = (tmp_path / "ev-0-00000000000000000100.ndjson").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ["p0-100", "p0-101", "p0-102"]
    assert sink.summary() == f"5 records in 2 ndjson files in {tmp_path}"
    sink.add(records(0, 103, 1))  # the next file starts at the next offset
    sink.flush()
    assert "ev-0-00000000000000000103.ndjson" in visible(tmp_path)


def test_replay_from_the_same_offset_overwrites_the_same_file(tmp_path: Path) -> None:
    first = FileSink(tmp_path)
    first.add(records(0, 0, 5))
    first.flush()  # renamed, but suppose the offsets were never committed (crash)
    replay = FileSink(tmp_path)
    replay.on_assign([("ev", 0)])
    replay.add(records(0, 0, 8))
    replay.flush()
    assert visible(tmp_path) == [final_name("ev", 0, 0, "ndjson")]
    assert len((tmp_path / final_name("ev", 0, 0, "ndjson")).read_text().splitlines()) == 8


def test_stale_temporary_files_of_assigned_partitions_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".ev-0-00000000000000000042.ndjson.tmp").write_text("partial")
    (tmp_path / ".ev-1-00000000000000000042.ndjson.tmp").write_text("someone else's")
    FileSink(tmp_path).on_assign([("ev", 0)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ev-1-00000000000000000042.ndjson.tmp"]


def test_roll_by_size_and_age_asks_for_a_checkpoint(tmp_path: Path) -> None:
    clock = Clock()
    sink = FileSink(tmp_path, roll_bytes=200, roll_seconds=10, clock=clock)
    assert not sink.wants_checkpoint()
    sink.add(records(0, 0, 2))
    assert not sink.wants_checkpoint()
    sink.add(records(0, 2, 10))
    assert sink.wants_checkpoint()  # > 200 bytes
    sink.flush()
    sink.add(records(0, 12, 1))
    clock.now = 9.9
    assert not sink.wants_checkpoint()
    clock.now = 10.0
    assert sink.wants_checkpoint()


def test_discard_drops_unflushed_records_and_tombstones_and_newlines_are_handled(
    tmp_path: Path,
) -> None:
    sink = FileSink(tmp_path)
    sink.add([Rec("ev", 0, 0, None), Rec("ev", 0, 1, b'{"a":\n1}')])
    assert sink.skipped_tombstones == 1
    sink.discard()
    assert list(tmp_path.iterdir()) == []
    sink.add([Rec("ev", 0, 1, b'{"a":\r\n1}')])
    sink.flush()
    assert (tmp_path / final_name("ev", 0, 1, "ndjson")).read_bytes() == b'{"a": 1}\n'


def test_parquet_files_have_a_fixed_schema(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    sink = FileSink(tmp_path, fmt="parquet")
    batch = records(2, 50, 3)
    batch[0]._key = b"k"
    sink.add(batch)
    sink.flush()
    table = pq.read_table(tmp_path / final_name("ev", 2, 50, "parquet"))
    assert table.column_names == ["partition", "offset", "timestamp_ms", "key", "value"]
    assert table.column("offset").to_pylist() == [50, 51, 52]
    assert table.column("key").to_pylist() == [b"k", None, None]
    assert json.loads(table.column("value")[2].as_py()) == {"event_id": "p2-52"}


def test_file_sink_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="--format"):
        FileSink("/tmp/x", fmt="csv")
    with pytest.raises(ConfigError, match="--roll-size"):
        FileSink("/tmp/x", roll_bytes=0)


# -- PostgreSQL sink helpers ------------------------------------------------------------------


def test_copy_payload_escapes_backslashes_and_flattens_whitespace() -> None:
    assert copy_payload([b'{"a":"x\\"y"}', b"{}"]) == b'{"a":"x\\\\"y"}\n{}\n'
    assert copy_payload([b'{"a":\t1,\r\n"b":2}']) == b'{"a": 1,  "b":2}\n'


def test_table_names_are_plain_identifiers_only() -> None:
    assert table_name("events") == ("events",)
    assert table_name("analytics.events_v2") == ("analytics", "events_v2")
    for bad in ("events; drop table x", "a.b.c", "", "1abc", 'ev"il'):
        with pytest.raises(ConfigError, match="is not a table name"):
            table_name(bad)


def test_dsn_passwords_are_redacted() -> None:
    assert redact_dsn("postgresql://me:s3cret@db:5432/app") == "postgresql://me:***@db:5432/app"
    assert redact_dsn("host=db password=s3cret user=me") == "host=db password=*** user=me"
    assert redact_dsn("postgresql://me@db/app") == "postgresql://me@db/app"


def enriched(event_id: str, **extra: object) -> bytes:
    body: dict[str, object] = {
        "event_id": event_id,
        "type": "t",
        "source": "s",
        "timestamp": 1_700_000_000_000,
        "severity": "info",
        "event_time_ms": 1_700_000_000_000,
        "enrichment": {"known_service": True, "score": 2.0},
    }
    body.update(extra)
    return json.dumps(body).encode()


def test_postgres_sink_refuses_what_it_could_never_write() -> None:
    sink = PostgresSink("postgresql://nobody@127.0.0.1:1/none")
    rejects = sink.add(
        [
            Rec("e", 0, 0, enriched("a")),
            Rec("e", 0, 1, None),
            Rec("e", 0, 2, b"{nope"),
            Rec("e", 0, 3, json.dumps({"event_id": "raw"}).encode()),
            Rec("e", 0, 4, enriched("b", entity="nul\u0000here")),
            Rec("e", 0, 5, enriched("c")),
        ]
    )
    assert [(r.position, r.error_class) for r in rejects] == [
        (1, "empty"),
        (2, "malformed_json"),
        (3, "schema_violation"),
        (4, "unsupported_by_postgres"),
    ]
    assert sink.buffered == 2
    sink.discard()
    assert sink.buffered == 0
    assert "nobody" in repr(sink)
