"""File sources: column mapping, CSV/NDJSON/JSON/Parquet rows -> event JSON, chunking, resume.

Local temporary files only (no Kafka). Every produced value is checked against
the worker's own validator, so "accepted here" means "accepted by the worker".
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

import tests.support.observability as obs
from connectors.base import Position, Source, SourceChunk
from connectors.chunks import csv_record_boundary, line_boundary, read_chunks
from connectors.csv_source import CsvSource
from connectors.json_source import JsonSource, NdjsonSource, split_lines
from connectors.mapping import ColumnMapping
from stream.errors import ConfigError

HEADER = "id,kind,service,ts,sev,entity,value,dc\n"
MAPPING = ColumnMapping.parse(
    ["event_id=id,type=kind,source=service", "timestamp=ts,severity=sev,attributes.region=dc"]
)
T0 = 1_700_000_000_000


START = Position()


def read_all(source: Source, start: Position = START) -> list[SourceChunk]:
    return list(source.chunks(start))


def values_of(chunks: list[SourceChunk]) -> list[dict[str, object]]:
    return [json.loads(v) for c in chunks for v in c.values]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


# -- mapping ---------------------------------------------------------------------------------


def test_mapping_parses_fields_and_attributes() -> None:
    m = ColumnMapping.parse(["event_id=id, source=svc", "attributes.dc=region"])
    assert dict(m.fields) == {"event_id": "id", "source": "svc"}
    assert dict(m.attributes) == {"dc": "region"}
    assert not m.is_identity
    assert ColumnMapping.parse([]).is_identity


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("event_id", "is not TARGET=COLUMN"),
        ("colour=c", "unknown target field 'colour'"),
        ("=c", "is not TARGET=COLUMN"),
    ],
)
def test_mapping_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ColumnMapping.parse([spec])


def test_unmapped_fields_default_to_same_named_columns_and_attribute_columns() -> None:
    columns = ["event_id", "type", "source", "timestamp", "severity", "x", "attributes.zone"]
    resolved = ColumnMapping.parse([]).resolve(columns, "f.csv")
    assert resolved.positions == {
        "event_id": 0,
        "type": 1,
        "source": 2,
        "timestamp": 3,
        "severity": 4,
    }
    assert resolved.attributes == {"zone": 6}
    assert resolved.position("entity") == -1


def test_missing_required_column_fails_before_reading_and_names_the_columns() -> None:
    with pytest.raises(ConfigError, match=r"no column for required field 'severity'.*--map"):
        ColumnMapping.parse([]).resolve(["event_id", "type", "source", "timestamp"], "f.csv")
    with pytest.raises(ConfigError, match=r"f.csv has no column 'nope' \(columns: a, b\)"):
        ColumnMapping.parse(["event_id=nope"]).resolve(["a", "b"], "f.csv")


# -- chunk boundaries ------------------------------------------------------------------------


def test_csv_record_boundary_skips_newlines_inside_quotes() -> None:
    assert csv_record_boundary(b'a,b\nc,"x\ny"\n') == len(b'a,b\nc,"x\ny"\n')
    assert csv_record_boundary(b'a,b\nc,"x\ny') == len(b"a,b\n")
    assert csv_record_boundary(b'c,"x\ny') == -1
    assert line_boundary(b"a\nb") == 2
    assert line_boundary(b"ab") == -1


def test_read_chunks_returns_whole_records_with_exact_end_offsets(tmp_path: Path) -> None:
    text = 'h1,h2\n1,"multi\nline"\n2,x\n3,"a ""quoted"" b"\n4,y'
    path = write(tmp_path, "c.csv", text)
    with path.open("rb") as f:
        chunks = list(read_chunks(f, 0, csv_record_boundary, chunk_bytes=4))
    assert b"".join(c for c, _ in chunks) == text.encode()
    for chunk, end in chunks:
        assert text.encode()[:end].endswith(chunk)
        assert chunk.count(b'"') % 2 == 0


# -- CSV -------------------------------------------------------------------------------------


def test_csv_rows_become_valid_events_with_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "e.csv",
        HEADER
        + f"e1,login,auth,{T0},info,user-1,1.5,eu\n"
        + "e2,login,auth,2023-11-14T22:13:20+00:00,error,,,us\n",
    )
    chunks = read_all(CsvSource(path, MAPPING))
    assert values_of(chunks) == [
        {
            "event_id": "e1",
            "type": "login",
            "source": "auth",
            "severity": "info",
            "attributes": {"region": "eu"},
            "timestamp": T0,
            "entity": "user-1",
            "value": 1.5,
        },
        {
            "event_id": "e2",
            "type": "login",
            "source": "auth",
            "severity": "error",
            "attributes": {"region": "us"},
            "timestamp": "2023-11-14T22:13:20+00:00",
            "entity": None,
            "value": None,
        },
    ]
    result = obs.validator().validate([v for c in chunks for v in c.values])
    assert len(result.events) == 2 and not result.rejects
    assert list(chunks[-1].lines or []) == [2, 3]
    assert chunks[-1].position == Position(path.stat().st_size, 3, 2)


def test_csv_escapes_quotes_backslashes_tabs_and_quoted_newlines(tmp_path: Path) -> None:
    tricky = 'say ""hi"" \\ back\tslash\nnext line'
    path = write(tmp_path, "q.csv", HEADER + f'e1,t,"s,1",{T0},info,"{tricky}",2,eu\n')
    (event,) = values_of(read_all(CsvSource(path, MAPPING)))
    assert event["source"] == "s,1"
    assert event["entity"] == 'say "hi" \\ back\tslash\nnext line'


def test_csv_bad_cells_reach_the_validator_which_names_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.csv",
        HEADER
        + f"e1,t,s,{T0},info,,not-a-number,eu\n"  # value: string -> schema_violation
        + f"e2,t,s,{T0},loud,,,eu\n"  # severity enum
        + "e3,t,s,yesterday,info,,,eu\n"  # timestamp string, not RFC 3339
        + f",t,s,{T0},info,,,eu\n",  # empty event_id
    )
    chunks = read_all(CsvSource(path, MAPPING))
    result = obs.validator().validate(chunks[0].values)
    classes = [(r.position, r.error_class) for r in result.rejects]
    assert classes == [
        (0, "schema_violation"),
        (1, "schema_violation"),
        (2, "bad_timestamp"),
        (3, "schema_violation"),
    ]
    assert "$.value" in result.rejects[0].message


def test_csv_wrong_field_count_is_malformed_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.csv",
        HEADER
        + f"e1,t,s,{T0},info,,,eu\n"
        + "\n"  # blank line: skipped, but counted
        + "e2,t,s,too,few\n"
        + f'e3,t,s,{T0},info,"two\nlines",,eu\n'
        + f"e4,t,s,{T0},info,,,eu,extra\n"
        + f"e5,t,s,{T0},info,,,eu\n",
    )
    chunks = read_all(CsvSource(path, MAPPING))
    assert [json.loads(v)["event_id"] for c in chunks for v in c.values] == ["e1", "e3", "e5"]
    assert [line for c in chunks for line in (c.lines or [])] == [2, 5, 8]
    malformed = [m for c in chunks for m in c.malformed]
    assert [(m.line, m.error_class) for m in malformed] == [
        (4, "malformed_row"),
        (7, "malformed_row"),
    ]
    assert malformed[0].raw == b"e2,t,s,too,few"
    assert malformed[0].message == "expected 8 fields, found 5"
    assert chunks[-1].position.record == 5


def test_csv_resume_from_any_chunk_end_yields_exactly_the_rest(tmp_path: Path) -> None:
    rows = "".join(f"e{i},t,s{i % 3},{T0 + i},info,,{i},eu\n" for i in range(500))
    path = write(tmp_path, "r.csv", HEADER + rows)
    source = CsvSource(path, MAPPING, chunk_bytes=700)
    chunks = read_all(source)
    assert len(chunks) > 10
    everything = values_of(chunks)
    for cut in (1, 5, len(chunks) - 1):
        rest = read_all(source, chunks[cut - 1].position)
        assert values_of(rest) == everything[len(values_of(chunks[:cut])) :]
        lines_after = [n for c in chunks[cut:] for n in (c.lines or [])]
        assert [n for c in rest for n in (c.lines or [])] == lines_after


def test_tsv_uses_tabs_and_allows_them_as_delimiters(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "e.tsv",
        "event_id\ttype\tsource\ttimestamp\tseverity\n" + f"e1\tt\ts\t{T0}\tinfo\n",
    )
    (event,) = values_of(read_all(CsvSource(path, ColumnMapping())))
    assert event == {
        "event_id": "e1",
        "type": "t",
        "source": "s",
        "severity": "info",
        "timestamp": T0,
    }


def test_empty_csv_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        CsvSource(write(tmp_path, "empty.csv", ""), MAPPING)


# -- NDJSON and JSON arrays ------------------------------------------------------------------


def test_split_lines_skips_blank_lines_and_handles_crlf() -> None:
    values, lines = split_lines(b"a\n\nb\r\n  \nc\n", 10)
    assert values == [b"a", b"b", b"c"]
    assert list(lines) == [11, 13, 15]
    values, lines = split_lines(b"a\nb\n", 0)
    assert values == [b"a", b"b"] and list(lines) == [1, 2]


def test_ndjson_passes_lines_through_untouched_without_mapping(tmp_path: Path) -> None:
    good = json.dumps(
        {"event_id": "e1", "type": "t", "source": "s", "timestamp": T0, "severity": "info"}
    )
    path = write(tmp_path, "e.ndjson", f"{good}\nnot json\n\n{good}")
    chunks = read_all(NdjsonSource(path, ColumnMapping()))
    assert [v for c in chunks for v in c.values] == [good.encode(), b"not json", good.encode()]
    assert [line for c in chunks for line in (c.lines or [])] == [1, 2, 4]
    result = obs.validator().validate(chunks[0].values)
    assert [(r.position, r.error_class) for r in result.rejects] == [(1, "malformed_json")]
    assert chunks[-1].position == Position(path.stat().st_size, 4, 3)


def test_ndjson_mapping_renames_keys_and_builds_attributes(tmp_path: Path) -> None:
    row = {"id": "e1", "kind": "t", "service": "s", "ts": T0, "sev": "info", "dc": "eu", "x": 1}
    path = write(tmp_path, "m.jsonl", json.dumps(row) + "\n[1,2]\n")
    chunks = read_all(NdjsonSource(path, MAPPING))
    first, second = chunks[0].values
    assert json.loads(first) == {
        "x": 1,
        "event_id": "e1",
        "type": "t",
        "source": "s",
        "timestamp": T0,
        "severity": "info",
        "attributes": {"region": "eu"},
    }
    assert second == b"[1,2]"  # not an object: left for the validator to reject


def test_ndjson_resumes_by_byte_offset(tmp_path: Path) -> None:
    text = "".join(json.dumps({"event_id": f"e{i}"}) + "\n" for i in range(300))
    path = write(tmp_path, "r.ndjson", text)
    source = NdjsonSource(path, ColumnMapping(), chunk_bytes=512)
    chunks = read_all(source)
    rest = read_all(source, chunks[3].position)
    ids = [json.loads(v)["event_id"] for c in chunks for v in c.values]
    assert [json.loads(v)["event_id"] for c in rest for v in c.values] == ids[
        chunks[3].position.record :
    ]
    assert rest[0].lines is not None
    assert rest[0].lines[0] == chunks[3].position.line + 1


def test_json_array_elements_are_values_located_by_index(tmp_path: Path) -> None:
    elements = [{"event_id": f"e{i}", "n": i} for i in range(25_001)]
    path = write(tmp_path, "a.json", json.dumps(elements, indent=1))
    source = JsonSource(path, ColumnMapping())
    chunks = read_all(source)
    assert [c.first_record for c in chunks] == [1, 10_001, 20_001]
    assert all(c.lines is None for c in chunks)
    assert [json.loads(v)["n"] for c in chunks for v in c.values] == list(range(25_001))
    assert chunks[-1].position.record == 25_001
    rest = read_all(source, chunks[0].position)
    assert json.loads(rest[0].values[0])["n"] == 10_000


def test_json_file_that_is_ndjson_is_read_as_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "lines.json", '{"event_id":"a"}\n{"event_id":"b"}\n')
    chunks = read_all(JsonSource(path, ColumnMapping()))
    assert [v for c in chunks for v in c.values] == [b'{"event_id":"a"}', b'{"event_id":"b"}']
    assert list(chunks[0].lines or []) == [1, 2]


def test_broken_json_array_is_one_clear_error(tmp_path: Path) -> None:
    from connectors.base import SourceError

    with pytest.raises(SourceError, match="is not a JSON array of events"):
        read_all(JsonSource(write(tmp_path, "b.json", '[{"a": 1}, {'), ColumnMapping()))


# -- Parquet ---------------------------------------------------------------------------------


def test_parquet_types_become_contract_types_and_resume_skips_row_groups(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from datetime import UTC, datetime
    from decimal import Decimal

    from connectors.parquet_source import ParquetSource

    n = 2_500
    table = pa.table(
        {
            "id": [f"e{i}" for i in range(n)],
            "type": ["t"] * n,
            "source": ["s"] * n,
            "ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC")),
            "severity": ["info"] * n,
            "value": pa.array([Decimal("1.25")] * (n - 1) + [None], pa.decimal128(5, 2)),
            "dc": ["eu"] * n,
            "unused": list(range(n)),
        }
    )
    path = tmp_path / "e.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    mapping = ColumnMapping.parse(["event_id=id,timestamp=ts,attributes.region=dc"])
    source = ParquetSource(path, mapping, batch_rows=700)
    chunks = read_all(source)
    events = values_of(chunks)
    assert len(events) == n
    assert events[0] == {
        "event_id": "e0",
        "type": "t",
        "source": "s",
        "timestamp": 1_704_067_200_000,
        "severity": "info",
        "value": 1.25,
        "attributes": {"region": "eu"},
    }
    assert "value" not in events[-1]
    assert not obs.validator().validate([v for c in chunks for v in c.values]).rejects
    rest = read_all(source, Position(0, 0, 1_700))
    assert [e["event_id"] for e in values_of(rest)] == [f"e{i}" for i in range(1_700, n)]
    assert rest[0].first_record == 1_701


def test_msgspec_raw_elements_are_copied_as_bytes() -> None:
    raw = msgspec.json.Decoder(list[msgspec.Raw]).decode(b'[{"a":1}, 2]')
    assert [bytes(r) for r in raw] == [b'{"a":1}', b"2"]


def test_csv_row_with_invalid_utf8_is_malformed_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "enc.csv"
    path.write_bytes(
        HEADER.encode()
        + f"e1,t,s,{T0},info,,,eu\n".encode()
        + f"e2,t,s\xff,{T0},info,,,eu\n".encode("latin-1")
        + f"e3,t,s,{T0},info,,,eu\n".encode()
    )
    chunks = read_all(CsvSource(path, MAPPING))
    assert [json.loads(v)["event_id"] for c in chunks for v in c.values] == ["e1", "e3"]
    (bad,) = [m for c in chunks for m in c.malformed]
    assert (bad.line, bad.error_class) == (3, "bad_encoding")
    assert bad.raw == f"e2,t,s\xff,{T0},info,,,eu".encode("latin-1")
