"""The peer pipelines (benchmarks/peers) against the generator's ground truth on a real broker.

Each peer runs the way ``stream bench`` runs it: the Python peers with the interpreter of
their own virtual environment, Kafka Streams as the Maven-built jar
(``benchmarks.peers.envs``; built once per machine into ``$STREAM_HOME``, skipped without
Java or Maven).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from benchmarks.peers import envs
from stream.loadgen.broker import seed_reference_data
from stream.loadgen.generator import GeneratorConfig, generate
from stream.loadgen.producer import LoadOptions, run_load
from stream.loadgen.reference import reference_data
from stream.pipelines.observability import event_decoder
from tests.conftest import unique_name

REPO = Path(__file__).resolve().parents[2]
COUNT = 2000
WINDOW_MS = 60_000
THRESHOLD = 5


@pytest.fixture(scope="module")
def generator_config() -> GeneratorConfig:
    # 10 events/s of event time: 2000 events span ~200 s, so several windows close.
    start = (int(time.time() * 1000) - 3_600_000) // WINDOW_MS * WINDOW_MS
    return GeneratorConfig(seed=17, invalid_ratio=0.05, start_ms=start, event_rate=10)


def _expected_windows(config: GeneratorConfig) -> dict[tuple[str, int], int]:
    """(source, window start) -> error|critical count, for windows that reach the threshold."""
    counts: Counter[tuple[str, int]] = Counter()
    for record in generate(COUNT, **_options(config)):
        if record.valid:
            event = event_decoder.decode(record.value)
            if event.severity in ("error", "critical"):
                start = record.event_time_ms // WINDOW_MS * WINDOW_MS
                counts[(event.source, start)] += 1
    return {key: n for key, n in counts.items() if n >= THRESHOLD}


def _options(config: GeneratorConfig) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "invalid_ratio": config.invalid_ratio,
        "start_ms": config.start_ms,
        "event_rate": config.event_rate,
    }


def _read(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("peer-read"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < expected:
            records.extend(m for m in consumer.consume(5000, 0.5) if m.error() is None)
        # a moment more to catch anything beyond the expected count
        records.extend(m for m in consumer.consume(5000, 1.0) if m.error() is None)
    finally:
        consumer.close()
    return records


def _peer_env(name: str) -> envs.PeerEnv:
    try:
        return envs.prepare(name)
    except envs.PeerUnavailable as exc:
        if exc.missing:
            pytest.skip(str(exc))
        raise


@pytest.mark.broker
@pytest.mark.parametrize("peer", ["quix", "faust-per-event", "kstreams"])
def test_peer_matches_the_ground_truth(
    peer: str,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    generator_config: GeneratorConfig,
    tmp_path: Path,
) -> None:
    env = _peer_env(peer)
    source = topic_factory("peer-in", partitions=2)
    enriched = topic_factory("peer-enriched", partitions=2)
    correlations = topic_factory("peer-corr", partitions=1)
    dlq = topic_factory("peer-dlq", partitions=1)
    report = run_load(
        LoadOptions(
            bootstrap=kafka_bootstrap, topic=source, count=COUNT, generator=generator_config
        ),
        progress_stream=None,
    )
    assert report.ok
    truth = list(generate(COUNT, **_options(generator_config)))
    valid = sum(1 for r in truth if r.valid)

    common = [
        *("--bootstrap", kafka_bootstrap, "--input", source, "--enriched", enriched),
        *("--correlations", correlations, "--dlq", dlq, "--group", unique_name("peer")),
        *("--expect", str(COUNT), "--timeout", "120"),
    ]
    if peer == "kstreams":
        reference = topic_factory("peer-ref", partitions=1, config={"cleanup.policy": "compact"})
        seed_reference_data(kafka_bootstrap, reference, generator_config.sources)
        # two stream threads, after the JIT warm-up pass the bench runs (own application id)
        args = [*common, "--reference", reference, "--threads", "2"]
        args += ["--warmup-records", str(COUNT), "--state-dir", str(tmp_path / "state")]
    else:
        reference_json = tmp_path / "reference.json"
        reference_json.write_text(json.dumps(reference_data(generator_config.sources)))
        args = [*common, "--reference-json", str(reference_json)]
    # the peer's own environment: nothing of the product's but the checkout on the path
    child_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(
        [*env.command, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env={**child_env, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    line = json.loads(lines[0])
    assert line["events"] == COUNT
    assert line["valid"] == valid
    assert line["dlq"] == COUNT - valid
    assert line["events_per_s"] > 0
    if peer == "kstreams":
        assert line["threads"] == 2
        assert line["warmup"]["records"] == COUNT
        assert line["kafka_streams"] == env.clients["kafka-clients"]
    else:
        # the peer ran its venv's client, not the product's
        assert env.command[0] != sys.executable
        assert "confluent-kafka" in env.clients and "librdkafka" in env.clients

    out = _read(kafka_bootstrap, enriched, valid)
    assert len(out) == valid
    sample = json.loads(out[0].value())
    assert set(sample["enrichment"]) >= {"known_service", "score"}
    assert {json.loads(m.value())["event_id"] for m in out} == {
        event_decoder.decode(r.value).event_id for r in truth if r.valid
    }
    dead = _read(kafka_bootstrap, dlq, COUNT - valid)
    assert sorted(m.value() for m in dead) == sorted(r.value for r in truth if not r.valid)

    expected = _expected_windows(generator_config)
    found = {
        (c["group"]["source"], c["window_start"]): c["count"]
        for c in (json.loads(m.value()) for m in _read(kafka_bootstrap, correlations, 1))
    }
    assert line["correlations"] == len(found) > 0
    if peer == "faust-per-event":
        # emitted when a window's count reaches the threshold, open windows included
        assert set(found) == set(expected)
        assert set(found.values()) == {THRESHOLD}
    else:
        # final results of closed windows only, with their exact counts
        assert found.items() <= expected.items()
