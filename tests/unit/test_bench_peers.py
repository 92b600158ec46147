"""The peers' own environments (benchmarks/peers/envs.py) and the Kafka Streams row's
best-of-threads bookkeeping, without building anything or starting a broker."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import pytest

from benchmarks.harness import orchestrate
from benchmarks.harness.console import Console
from benchmarks.harness.orchestrate import BenchOptions, Run, best_of_threads, run_row, select_rows
from benchmarks.harness.report import client_text, render_table
from benchmarks.harness.rows import FAILED, OK, SKIPPED, Row
from benchmarks.peers import envs
from stream.localbroker.errors import PrerequisiteMissingError


def _run() -> Run:
    console = Console(io.StringIO(), quiet=True)
    return Run(BenchOptions(events=1000), cast(Any, None), cast(Any, None), console, Path())


def test_kstreams_is_a_row_and_takes_part_in_latency_runs() -> None:
    assert select_rows(None, None)[-1] == "kstreams"
    assert "kstreams" in select_rows("kstreams,stream", None)


def test_client_column_names_what_each_row_ran() -> None:
    assert (
        client_text({"confluent-kafka": "2.16.1", "librdkafka": "2.16.0"})
        == "confluent-kafka 2.16.1 / librdkafka 2.16.0"
    )
    quix = {"quixstreams": "3.28.1", "confluent-kafka": "2.12.2", "librdkafka": "2.12.1"}
    assert client_text(quix) == "confluent-kafka 2.12.2 / librdkafka 2.12.1"
    faust = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "confluent-kafka": "2.16.1"}
    assert client_text(faust) == "aiokafka 0.14.0"
    kstreams = {"kafka-streams": "4.3.1", "kafka-clients": "4.3.1", "java": "17.0.15"}
    assert client_text(kstreams) == "kafka-clients 4.3.1"
    assert client_text({}) == "—"
    row = Row("kstreams", 10, events_per_s=5.0, clients=kstreams)
    assert render_table([row]).splitlines()[2].rstrip(" |").endswith("kafka-clients 4.3.1")
    assert Row("quix", 10, clients=quix).as_dict()["clients"] == quix


def test_without_java_the_kstreams_row_is_skipped_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_java() -> Path:
        raise PrerequisiteMissingError("`java` was not found on PATH")

    monkeypatch.setattr(envs, "find_java", no_java)
    with pytest.raises(envs.PeerUnavailable) as caught:
        envs.kstreams_env(tmp_path)
    assert caught.value.missing
    assert "java" in str(caught.value)


def test_without_maven_an_unbuilt_kstreams_row_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(envs, "find_java", lambda: Path("/usr/bin/java"))
    monkeypatch.setattr(envs.shutil, "which", lambda _name: None)
    with pytest.raises(envs.PeerUnavailable) as caught:
        envs.kstreams_env(tmp_path)
    assert caught.value.missing
    assert "mvn" in str(caught.value)


def test_unavailable_peer_rows_are_skipped_or_failed_without_running() -> None:
    run = _run()
    run.peers["kstreams"] = envs.PeerUnavailable("no java", missing=True)
    run.peers["quix"] = envs.PeerUnavailable("pip install failed")
    skipped = run_row(run, "kstreams", 1)
    failed = run_row(run, "quix", 2)
    assert (skipped.status, skipped.notes) == (SKIPPED, ["no java"])
    assert (failed.status, failed.notes) == (FAILED, ["pip install failed"])


def test_python_peer_venv_is_built_once_and_rebuilt_when_its_requirements_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    requirements = tmp_path / "requirements-fake.txt"
    requirements.write_text("fakepeer==1.0\n")
    peer = envs.PythonPeer("benchmarks.peers.fake", "fake", ("fakepeer",))
    monkeypatch.setattr(envs.PythonPeer, "requirements", property(lambda _self: requirements))
    monkeypatch.setitem(envs.PYTHON_PEERS, "fake", peer)
    calls: list[list[str]] = []

    def fake_run(argv: list[str], what: str, cwd: Path | None = None) -> str:
        calls.append(argv)
        if "venv" in argv:
            (Path(argv[-1]) / "bin").mkdir(parents=True)
        return json.dumps({"fakepeer": "1.0", "librdkafka": "2.12.1"}) if "-c" in argv else ""

    monkeypatch.setattr(envs, "_run", fake_run)
    home = tmp_path / "home"
    first = envs.python_env("fake", home)
    assert first.built_seconds is not None
    assert first.command == (str(home / "peer-venvs/fake/bin/python"), "-m", peer.module)
    assert first.clients == {"fakepeer": "1.0", "librdkafka": "2.12.1"}
    assert len(calls) == 3  # venv, pip install -r, versions
    assert any("-r" in c and str(requirements) in c for c in calls)

    again = envs.python_env("fake", home)
    assert again.built_seconds is None and len(calls) == 3  # cached
    requirements.write_text("fakepeer==2.0\n")
    assert envs.python_env("fake", home).built_seconds is not None
    assert len(calls) == 6


def _attempt(threads: int, rate: float | None, status: str = OK) -> Row:
    row = Row("kstreams", 1000, status=status, events_per_s=rate)
    row.cpu_seconds_per_million = 20.0
    row.peak_rss_mb = 300.0
    row.detail["warmup"] = {"records": 1000}
    if status != OK:
        row.notes.append("enriched 1 (expected 2)")
    return row


def test_kstreams_reports_the_faster_of_one_and_two_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rates = {1: 30_000.0, 2: 45_000.0}
    monkeypatch.setattr(
        orchestrate,
        "measure_throughput",
        lambda _run, _name, _topics, threads=1: _attempt(threads, rates[threads]),
    )
    row = best_of_threads(_run(), "kstreams", "[1/1] kstreams")
    assert row.ok and row.events_per_s == 45_000.0
    assert row.detail["threads"] == 2
    assert [a["threads"] for a in row.detail["attempts"]] == [1, 2]
    assert [a["events_per_s"] for a in row.detail["attempts"]] == [30_000.0, 45_000.0]
    assert row.notes[0].startswith("best of 1 thread: 30,000 events/s")
    assert "2 threads: 45,000 events/s" in row.notes[0]
    assert row.detail["attempts"][1]["notes"] == []  # the summary is the row's, not the attempt's


def test_an_incorrect_kstreams_attempt_fails_the_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        orchestrate,
        "measure_throughput",
        lambda _run, _name, _topics, threads=1: (
            _attempt(threads, 30_000.0) if threads == 1 else _attempt(threads, None, FAILED)
        ),
    )
    row = best_of_threads(_run(), "kstreams", "[1/1] kstreams")
    assert row.status == FAILED
    assert row.detail["threads"] == 1
    assert any(n.startswith("2 thread(s): enriched 1") for n in row.notes)
