"""``stream ingest FILE...`` against the real broker: exact counts, DLQ locations, resume.

The CLI runs as a subprocess, the way users run it. The CSV test uses
100,000 rows by default; ``STREAM_FULL_TESTS=1`` runs the full 1,000,000.
The measured rows/s is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.kafka import headers as h
from tests.support.pipeline import end_offsets, read_all

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("STREAM_FULL_TESTS") == "1"
CSV_ROWS = 1_000_000 if FULL else 100_000
T0 = 1_700_000_000_000
HEADER = "id,kind,service,ts,sev,entity,value,dc\n"
MAP = "event_id=id,type=kind,source=service,timestamp=ts,severity=sev,attributes.region=dc"
SEVERITIES = ("debug", "info", "warning", "error", "critical")


def write_csv(path: Path, rows: int) -> tuple[int, dict[int, str]]:
    """Rows with a few kinds of bad ones; returns (valid count, {line: expected error class})."""
    bad: dict[int, str] = {}
    out = [HEADER]
    for i in range(rows):
        line = i + 2
        ts, sev, value = str(T0 + i), SEVERITIES[i % 5], f"{i % 1000}.5"
        tail = ""
        if i % 1000 == 7:
            sev, bad[line] = "loud", "schema_violation"
        elif i % 1000 == 307:
            value, bad[line] = "n/a", "schema_violation"
        elif i % 1000 == 607:
            ts, bad[line] = "yesterday", "bad_timestamp"
        elif i % 1000 == 907:
            tail, bad[line] = ",extra", "malformed_row"
        out.append(f"e{i},login,svc-{i % 40},{ts},{sev},user-{i % 977},{value},eu{tail}\n")
    path.write_text("".join(out))
    return rows - len(bad), bad


def ingest(
    *args: str, bootstrap: str, home: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAM_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_HOME": str(home),
    }
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "ingest", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_csv_rows_reach_the_topic_and_bad_rows_the_dlq_with_file_and_line(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic, dlq = topic_factory("ingest", partitions=4), topic_factory("ingest-dlq")
    path = tmp_path / "events.csv"
    valid, bad = write_csv(path, CSV_ROWS)
    result = ingest(
        str(path),
        "--topic",
        topic,
        "--dlq-topic",
        dlq,
        "--map",
        MAP,
        "--json",
        "-q",
        bootstrap=kafka_bootstrap,
        home=tmp_path,
    )
    report = json.loads(result.stdout)
    print(
        f"\ningest {CSV_ROWS:,} CSV rows: {report['seconds']:.2f}s, "
        f"{report['rows_per_second']:,} rows/s"
    )
    assert (report["accepted"], report["rejected"]) == (valid, len(bad))
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == valid

    records = read_all(kafka_bootstrap, topic)
    ids = {json.loads(m.value())["event_id"] for m in records}
    assert len(ids) == len(records) == valid
    assert all(m.key() == json.loads(m.value())["source"].encode() for m in records[:1000])

    found: dict[int, str] = {}
    for m in read_all(kafka_bootstrap, dlq):
        headers = dict(m.headers() or [])
        assert headers["dlq.source.file"] == str(path).encode()
        assert headers[h.DLQ_STAGE] == b"ingest"
        assert headers[h.DLQ_ORIGINAL_TOPIC] == topic.encode()
        found[int(headers["dlq.source.line"])] = headers[h.DLQ_ERROR_CLASS].decode()
    assert found == bad


def test_interrupted_ingest_resumes_without_duplicates(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic, dlq = topic_factory("resume", partitions=2), topic_factory("resume-dlq")
    path = tmp_path / "big.csv"
    rows = 300_000
    valid, bad = write_csv(path, rows)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAM_HOME": str(tmp_path),
    }
    args = ["--topic", topic, "--dlq-topic", dlq, "--map", MAP, "--json", "-q"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "ingest",
            str(path),
            *args,
            "--checkpoint-interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    state_dir = tmp_path / "ingest-state"
    deadline = time.monotonic() + 120
    while not any(state_dir.glob("*.json")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no progress was saved"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    first = json.loads(out)
    assert first["interrupted"] and 0 < first["rows"] < rows

    second = json.loads(ingest(str(path), *args, bootstrap=kafka_bootstrap, home=tmp_path).stdout)
    assert second["files"][0]["resumed_from"] == first["rows"]
    assert first["accepted"] + second["accepted"] == valid
    assert first["rejected"] + second["rejected"] == len(bad)
    records = read_all(kafka_bootstrap, topic)
    assert len(records) == valid
    assert len({json.loads(m.value())["event_id"] for m in records}) == valid

    third = json.loads(ingest(str(path), *args, bootstrap=kafka_bootstrap, home=tmp_path).stdout)
    assert third["files"][0]["already_done"] and third["rows"] == 0
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == valid


def test_ndjson_and_parquet_files_in_one_run(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    topic, dlq = topic_factory("formats"), topic_factory("formats-dlq")
    lines = [
        json.dumps(
            {
                "event_id": f"n{i}",
                "type": "t",
                "source": "s",
                "timestamp": T0,
                "severity": "info" if i % 10 else "nope",
            }
        )
        for i in range(1_000)
    ]
    (tmp_path / "a.ndjson").write_text("\n".join(lines) + "\n")
    pq.write_table(
        pa.table(
            {
                "event_id": [f"p{i}" for i in range(500)],
                "type": ["t"] * 500,
                "source": ["s"] * 500,
                "timestamp": [T0] * 499 + [5],  # the last one is before 2000-01-01
                "severity": ["info"] * 500,
            }
        ),
        tmp_path / "b.parquet",
    )
    report = json.loads(
        ingest(
            str(tmp_path / "a.ndjson"),
            str(tmp_path / "b.parquet"),
            "--topic",
            topic,
            "--dlq-topic",
            dlq,
            "--json",
            "-q",
            bootstrap=kafka_bootstrap,
            home=tmp_path,
        ).stdout
    )
    assert [(f["accepted"], f["rejected"]) for f in report["files"]] == [(900, 100), (499, 1)]
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == 1_399
    locations = [
        (
            dict(m.headers() or []).get("dlq.source.line"),
            dict(m.headers() or []).get("dlq.source.record"),
        )
        for m in read_all(kafka_bootstrap, dlq)
    ]
    assert len(locations) == 101
    assert (None, b"500") in locations  # Parquet: record number
    assert {(str(i + 1).encode(), None) for i in range(0, 1_000, 10)} < set(locations)  # NDJSON


def test_bad_invocations_fail_with_one_line(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "e.csv"
    path.write_text(HEADER)
    missing = ingest(
        str(path),
        "--topic",
        "no-such-topic-xyz",
        "--map",
        MAP,
        bootstrap=kafka_bootstrap,
        home=tmp_path,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "stream: error: topic no-such-topic-xyz does not exist; create it with "
        "`stream topics create` (or kafka-topics.sh)"
    ]
    topic = topic_factory("bad-map")
    wrong_map = ingest(
        str(path),
        "--topic",
        topic,
        "--dlq-topic",
        topic,
        bootstrap=kafka_bootstrap,
        home=tmp_path,
        check=False,
    )
    assert wrong_map.returncode == 2
    assert "has no column for required field 'event_id'" in wrong_map.stderr
    assert len(wrong_map.stderr.strip().splitlines()) == 1
