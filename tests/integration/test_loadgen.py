"""``stream loadgen`` against a real broker: rate control, acknowledged counts, ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.loadgen.broker import REFERENCE_TOPIC, seed_reference_data
from stream.loadgen.generator import GeneratorConfig, generate
from stream.loadgen.producer import LoadOptions, run_load
from stream.loadgen.reference import reference_data
from stream.pipelines.observability import event_decoder
from tests.conftest import unique_name
from tests.support.pipeline import end_offsets, read_all

REPO = Path(__file__).resolve().parents[2]


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    ends = end_offsets(bootstrap, topic)
    assert len(ends) == partitions
    return sum(ends.values())


def _read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    records = read_all(bootstrap, topic)
    assert len(records) == expected
    return records


@pytest.mark.broker
def test_rate_control_sends_rate_times_duration(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("lg-rate", partitions=2)
    options = LoadOptions(bootstrap=kafka_bootstrap, topic=topic, duration=2.0, rate=5000)
    report = run_load(options, progress_stream=None)
    assert report.ok
    assert abs(report.sent - 10_000) <= 500
    assert 2.0 * 0.85 <= report.elapsed_s <= 2.0 * 1.15
    assert _end_offsets(kafka_bootstrap, topic, 2) == report.acknowledged


@pytest.mark.broker
def test_count_with_rate_takes_count_over_rate_seconds(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("lg-count-rate", partitions=2)
    options = LoadOptions(bootstrap=kafka_bootstrap, topic=topic, count=6000, rate=4000)
    report = run_load(options, progress_stream=None)
    assert report.sent == report.acknowledged == 6000
    assert 1.5 * 0.85 <= report.elapsed_s <= 1.5 * 1.15


@pytest.mark.broker
def test_several_processes_send_exactly_the_single_process_records(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    count = 20_000
    generator = GeneratorConfig(seed=21, invalid_ratio=0.05, late_ratio=0.02)
    topic = topic_factory("lg-procs", partitions=4)
    options = LoadOptions(
        bootstrap=kafka_bootstrap, topic=topic, count=count, processes=2, generator=generator
    )
    report = run_load(options, progress_stream=None)
    truth = list(generate(count, seed=21, invalid_ratio=0.05, late_ratio=0.02))
    assert report.ok
    assert report.acknowledged == count == _end_offsets(kafka_bootstrap, topic, 4)
    assert report.invalid == sum(1 for r in truth if not r.valid)
    assert report.late == sum(1 for r in truth if r.late)

    records = _read_all(kafka_bootstrap, topic, count)
    assert sorted(m.value() for m in records) == sorted(r.value for r in truth)
    assert all(m.key() == json.loads(m.value())["source"].encode() for m in records[:200] if _ok(m))


def _ok(message: Any) -> bool:
    try:
        event_decoder.decode(message.value())
    except Exception:
        return False
    return True


@pytest.mark.broker
def test_invalid_ratio_in_the_topic(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("lg-invalid", partitions=1)
    generator = GeneratorConfig(seed=3, invalid_ratio=0.1)
    options = LoadOptions(bootstrap=kafka_bootstrap, topic=topic, count=10_000, generator=generator)
    report = run_load(options, progress_stream=None)
    records = _read_all(kafka_bootstrap, topic, 10_000)
    assert len(records) == 10_000
    rejected = sum(1 for m in records if not _ok(m))
    far_future = sum(1 for m in records if b"2999-01-01" in m.value())
    # every invalid record fails the decoder except the well-formed year-2999 ones
    assert rejected + far_future == report.invalid
    assert abs(report.invalid / 10_000 - 0.1) <= 0.02


@pytest.mark.broker
def test_seed_reference_data_writes_the_known_services(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(REFERENCE_TOPIC, partitions=1, config={"cleanup.policy": "compact"})
    assert seed_reference_data(kafka_bootstrap, topic, n_services=20) == 18
    records = _read_all(kafka_bootstrap, topic, 18)
    got = {m.key().decode(): json.loads(m.value()) for m in records}
    assert got == reference_data(20)
    assert "svc-9" not in got


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loadgen.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.broker
def test_cli_creates_the_topic_and_reports_json(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = unique_name("lg-cli")
    reference = tmp_path / "reference.json"
    result = _cli(
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic",
        topic,
        "--count",
        "3000",
        "--invalid-ratio",
        "0.02",
        "--partitions",
        "3",
        "--reference-json",
        str(reference),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == report["acknowledged"] == 3000
    assert report["failed"] == 0
    assert report["invalid"] == 60
    assert f"created topic '{topic}' with 3 partitions" in result.stderr
    assert _end_offsets(kafka_bootstrap, topic, 3) == 3000
    assert json.loads(reference.read_text()) == reference_data(50)


def test_cli_without_a_broker_says_so_in_one_line() -> None:
    result = _cli("--bootstrap-servers", "127.0.0.1:42999", "--count", "10", timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line]
    assert lines == [
        "stream loadgen: cannot reach Kafka at 127.0.0.1:42999 within 5s "
        "(Failed to get metadata: Local: Broker transport failure)"
    ]
    assert result.stdout == ""


def test_cli_rejects_bad_options_with_exit_2() -> None:
    result = _cli("--count", "10", "--invalid-ratio", "2", timeout=60)
    assert result.returncode == 2
    assert "invalid_ratio" in result.stderr
    assert "Traceback" not in result.stderr
