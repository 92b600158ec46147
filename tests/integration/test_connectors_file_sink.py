"""``stream sink file`` against the real broker: rotation, atomic files, SIGKILL + restart.

While the sink runs, the test keeps listing the output directory: every file
it can see (not a dot-file) must already be complete — each line a whole JSON
document, the records of one partition in offset order starting at the offset
in the name. After a SIGKILL and a restart, the visible files hold every record
of the topic exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.file_sink import FileSink
from connectors.sink_runner import SinkRunner, SinkRunnerOptions
from tests.support.pipeline import committed_offsets, end_offsets, produce, wait_until

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


def record(partition: int, i: int) -> bytes:
    return json.dumps({"event_id": f"p{partition}-{i}", "n": i, "pad": "x" * 150}).encode()


def fill(bootstrap: str, topic: str, partitions: int, per_partition: int, start: int = 0) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, per_partition):
        for p in range(partitions):
            while True:
                try:
                    producer.produce(topic, record(p, i), partition=p)
                    break
                except BufferError:
                    producer.poll(0.1)
    assert producer.flush(60) == 0


def visible_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def check_complete(path: Path) -> list[dict[str, object]]:
    """A visible file must be whole: newline-terminated JSON lines, contiguous per partition."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} is partial"
    rows = [json.loads(line) for line in data.splitlines()]
    _, partition, first = path.stem.rsplit("-", 2)
    numbers = [int(str(r["n"])) for r in rows]
    assert numbers == list(range(int(first), int(first) + len(rows))), path.name
    assert {str(r["event_id"]).split("-")[0] for r in rows} == {f"p{partition}"}
    return rows


def start_sink(
    bootstrap: str, topic: str, dlq: str, out: Path, *extra: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAM_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_KAFKA": json.dumps({"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}),
        "STREAM_MAX_BATCH": "500",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "sink",
            "file",
            "--topic",
            topic,
            "--dlq-topic",
            dlq,
            "--dir",
            str(out),
            "--group",
            f"g-{topic}",
            "--roll-size",
            "150KB",
            "--roll-seconds",
            "30",
            "-q",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_rolling_files_are_atomic_and_a_killed_sink_restarts_without_duplicates(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic, dlq = topic_factory("filesink", partitions=2), topic_factory("filesink-dlq")
    per_partition = 12_000
    half = per_partition // 2
    fill(kafka_bootstrap, topic, 2, half)

    killed = threading.Event()

    def trickle() -> None:
        """The rest arrives while the sink runs, so the kill lands mid-stream (on a fast
        machine the sink used to finish all of a pre-filled topic before the kill). The
        last quarter waits for the kill: on a slow machine the sink used to need longer
        to roll its files than the trickle took, and the input was complete first."""
        for start in range(half, per_partition, 250):
            if start >= per_partition - per_partition // 4:
                killed.wait(timeout=180)
            fill(kafka_bootstrap, topic, 2, start + 250, start)
            time.sleep(0.2)

    producer = threading.Thread(target=trickle, daemon=True)
    out = tmp_path / "out"
    sink = start_sink(kafka_bootstrap, topic, dlq, out)
    producer.start()
    checked: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while len(checked) < 6:
            assert sink.poll() is None, sink.communicate()
            assert time.monotonic() < deadline, "no files rolled"
            if out.exists():
                for path in visible_files(out):
                    if path.name not in checked:
                        check_complete(path)
                        checked.add(path.name)
            time.sleep(0.01)
    finally:
        sink.send_signal(signal.SIGKILL)
        sink.communicate()
    still_producing = producer.is_alive()
    killed.set()
    producer.join(timeout=120)
    assert still_producing, "the input was complete before the kill: not a mid-stream kill"
    committed = committed_offsets(kafka_bootstrap, f"g-{topic}", topic)
    assert sum(max(o, 0) for o in committed.values()) < 2 * per_partition

    restart = start_sink(kafka_bootstrap, topic, dlq, out, "--stop-at-end")
    stdout, stderr = restart.communicate(timeout=300)
    assert restart.returncode == 0, stderr
    print(f"\nfile sink restart: {stdout.strip()}")

    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    ids: list[str] = []
    for path in visible_files(out):
        ids.extend(str(r["event_id"]) for r in check_complete(path))
    assert len(ids) == len(set(ids)) == 2 * per_partition
    assert committed_offsets(kafka_bootstrap, f"g-{topic}", topic) == end_offsets(
        kafka_bootstrap, topic
    )
    sizes = [p.stat().st_size for p in visible_files(out)]
    assert max(sizes) < 150 * 1024 + 500 * 200  # rolled near --roll-size (one batch over)


def test_parquet_files_roll_by_age(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    topic = topic_factory("filesink-pq")
    produce(kafka_bootstrap, topic, [(None, record(0, i)) for i in range(1_000)])
    sink = FileSink(tmp_path, fmt="parquet", roll_seconds=0.5)
    stop = threading.Event()
    runner = SinkRunner(
        {"bootstrap.servers": kafka_bootstrap},
        sink,
        SinkRunnerOptions(
            topic=topic, group_id=f"g-{topic}", dlq_topic=None, checkpoint_interval=None
        ),
        stop=stop,
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(
            lambda: sink.records_written == 1_000,
            timeout=60,
            interval=0.1,
            message="records written by age-based roll",
        )
    finally:
        stop.set()
        thread.join(timeout=60)
    (path,) = visible_files(tmp_path)
    assert path.name == f"{topic}-0-{0:020d}.parquet"
    table = pq.read_table(path)
    assert table.column("offset").to_pylist() == list(range(1_000))
    assert runner.stats.committed == {0: 1_000}
