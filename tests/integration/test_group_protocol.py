"""``group_protocol: classic | consumer`` (KIP-848) on a real Kafka 4.x broker.

* The consumer config each protocol gets: under ``consumer`` the session timeout,
  heartbeat and assignment strategy belong to the broker and are not set (librdkafka
  refuses to create such a consumer otherwise).
* Static membership with both: a worker SIGKILLed and restarted with the same
  ``group.instance.id`` resumes its partitions. Classic hands the membership to the
  new process at once; KIP-848 fences the *new* member until the broker's
  ``group.consumer.session.timeout.ms`` (45 s by default) expires the killed one, and
  the worker waits for that (``stream.app.wait_for_instance_id``) instead of crashing.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from stream.app import CLASSIC_ONLY, consumer_config
from stream.config import Settings
from stream.loadgen.generator import generate
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    produce,
    wait_until,
)

#: Broker default of group.consumer.session.timeout.ms (Kafka 4.x).
KIP848_SESSION_TIMEOUT_S = 45.0


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_consumer_config_per_protocol(protocol: str) -> None:
    settings = Settings(group_protocol=protocol, group_instance_id="w-1")  # type: ignore[arg-type]
    conf = consumer_config(settings)
    assert conf["group.protocol"] == protocol
    assert conf["group.instance.id"] == "w-1"
    if protocol == "consumer":
        assert not CLASSIC_ONLY & conf.keys()
    else:
        assert conf["partition.assignment.strategy"] == "cooperative-sticky"
        assert conf.keys() >= CLASSIC_ONLY
    Consumer({**conf, "logger": None}).close()  # librdkafka accepts it


def test_classic_is_the_default_and_the_env_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().group_protocol == "classic"
    monkeypatch.setenv("STREAM_GROUP_PROTOCOL", "consumer")
    assert Settings().group_protocol == "consumer"


def _events(count: int, seed: int) -> list[tuple[bytes | None, bytes]]:
    now = int(time.time() * 1000)
    return [
        (r.key, r.value)
        for r in generate(count, seed=seed, start_ms=now, event_rate=1000, invalid_ratio=0.0)
    ]


def _all_committed(topics: PipelineTopics) -> bool:
    ends = end_offsets(topics.bootstrap, topics.input)
    return committed_offsets(topics.bootstrap, topics.group, topics.input) == ends


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_static_member_restarted_after_sigkill_resumes(
    kafka_bootstrap: str, tmp_path: Path, protocol: str
) -> None:
    topics = PipelineTopics(kafka_bootstrap, partitions=4).create()
    env = {"STREAM_GROUP_PROTOCOL": protocol, "STREAM_GROUP_INSTANCE_ID": "static-1"}
    first = WorkerProcess(topics, tmp_path, extra_env=env)
    second: WorkerProcess | None = None
    try:
        first.wait_ready(timeout=60)
        produce(kafka_bootstrap, topics.input, _events(400, seed=1))
        wait_until(lambda: _all_committed(topics), 60, message="first batch committed")

        first.stop(signal.SIGKILL)
        killed = time.monotonic()
        second = WorkerProcess(topics, tmp_path, extra_env=env)
        produce(kafka_bootstrap, topics.input, _events(400, seed=2))
        limit = 20.0 if protocol == "classic" else KIP848_SESSION_TIMEOUT_S + 25.0
        wait_until(lambda: _all_committed(topics), limit, 0.2, "restarted member caught up")
        resumed = time.monotonic() - killed
        assert second.proc.poll() is None, second.log()
        ready, body = second.get("/ready")
        assert ready == 200 and b'"assigned_partitions":[0,1,2,3]' in body, body
        print(f"\n{protocol}: SIGKILL -> restarted static member caught up in {resumed:.1f}s")
        if protocol == "consumer":
            log = second.log()
            assert "still held by another member" in log or resumed < 10, log
        else:
            assert resumed < 20
    finally:
        for worker in (first, second):
            if worker is not None and worker.proc.poll() is None:
                worker.stop(signal.SIGTERM)
