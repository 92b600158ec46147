"""at_least_once on a real broker: clean rebalances replay nothing; backpressure pauses.

* Scale-out and scale-in while events flow. A member that joins makes the
  others' in-flight offset commits fail with ILLEGAL_GENERATION — once a
  crash, now a deferred commit — and a member that leaves commits first. So
  with no crash, no record is lost *or* repeated, even in at_least_once.
* Backpressure: the broker throttles the worker's producer (a real client
  quota), so the producer queue fills. The worker pauses its input partitions
  (``stream_paused_partitions``) instead of buffering without bound, resumes
  when the queue drains, and loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream import localbroker
from tests.chaos.harness import (
    BackgroundProducer,
    Worker,
    account,
    inputs_of,
    numbered,
    pipeline_factory,
    produce,
    read_topic,
    wait_all_committed,
    workers,
)

__all__ = ["pipeline_factory"]

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


def _ledger(pipeline: Any, positions: list[tuple[int, int]], count: int) -> Any:
    ids = [f"ev-{i}" for i in range(count)]
    return account(
        inputs_of(positions, ids, [True] * count),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )


def test_scaling_under_load_neither_loses_nor_repeats(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=4)
    records = numbered(24_000)
    producer = BackgroundProducer(pipeline, records, rate=2_000)
    a, b, c = (Worker(pipeline, tmp_path, name) for name in "abc")
    with workers(a, b, c):
        a.start()
        a.wait_ready()
        producer.start()
        for joining in (b, c):
            time.sleep(1.5)
            joining.start()
            joining.wait_ready()
        time.sleep(1.5)
        assert a.terminate()[0] == 0  # the member that owned everything leaves
        positions = producer.finish()
        wait_all_committed(pipeline, timeout=90, workers=[b, c])
        for w in (b, c):
            assert w.terminate()[0] == 0, w.log_tail()
    ledger = _ledger(pipeline, positions, len(records))
    assert ledger.lost == []
    assert ledger.duplicates == {}


def _set_producer_quota(bootstrap: str, client_id: str, byte_rate: int | None) -> None:
    """Kafka client quota ``producer_byte_rate`` for ``client_id`` (None removes it)."""
    action = (
        ["--add-config", f"producer_byte_rate={byte_rate}"]
        if byte_rate is not None
        else ["--delete-config", "producer_byte_rate"]
    )
    command = [
        str(localbroker.find_java()),
        "-Xmx128m",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        f"{localbroker.ensure_server_jars()}/*",
        "kafka.admin.ConfigCommand",
        "--bootstrap-server",
        bootstrap,
        "--alter",
        *action,
        "--entity-type",
        "clients",
        "--entity-name",
        client_id,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if byte_rate is not None:  # removing a quota that is already gone fails; that is fine
        assert result.returncode == 0, result.stdout + result.stderr


#: The Kubernetes liveness probe's timeoutSeconds (deploy/k8s/base/deployment.yaml).
LIVENESS_TIMEOUT_S = 2.0


def test_throttled_producer_pauses_input_instead_of_buffering(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    client_id = f"backpressure-{uuid.uuid4().hex[:8]}"
    # Pause above 2000 queued records, resume below 400; in-flight batches stay well below
    # the queue's hard limit (2 x 200 records), as the defaults do (4 x 10k vs 500k).
    queue_limit = 4_000
    records = numbered(20_000, pad=200)
    positions = produce(pipeline, records)
    _set_producer_quota(pipeline.bootstrap, client_id, 100_000)  # ~100 KB/s
    kafka = {"client.id": client_id, "queue.buffering.max.messages": str(queue_limit)}
    env = {
        "STREAM_KAFKA": json.dumps(kafka),
        "STREAM_MAX_BATCH": "200",
        "STREAM_MAX_INFLIGHT_BATCHES": "2",
    }
    worker = Worker(pipeline, tmp_path, "w", env=env)
    paused: list[float] = []
    scrape_seconds: list[float] = []
    try:
        with workers(worker):
            worker.start()
            worker.wait_ready()
            stop = threading.Event()

            def sample() -> None:
                # /metrics must answer throughout: the checkpoint waits for the throttled
                # broker off the event loop, or liveness probes would kill the pod.
                while not stop.is_set():
                    started = time.monotonic()
                    with contextlib.suppress(OSError):  # timed out after 5 s
                        paused.append(worker.metric("stream_paused_partitions"))
                    scrape_seconds.append(time.monotonic() - started)
                    time.sleep(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(8)
            _set_producer_quota(pipeline.bootstrap, client_id, None)
            wait_all_committed(pipeline, timeout=90, workers=[worker])
            stop.set()
            sampler.join(5)
            assert worker.metric("stream_paused_partitions") == 0
            assert worker.terminate()[0] == 0
    finally:
        _set_producer_quota(pipeline.bootstrap, client_id, None)
    assert max(paused) == 2, "the throttled worker never paused its input"
    print(f"slowest /metrics scrape while throttled: {max(scrape_seconds):.2f}s")
    assert max(scrape_seconds) < LIVENESS_TIMEOUT_S, "the event loop stalled while throttled"
    assert "pausing input partitions" in worker.log_text()
    ledger = _ledger(pipeline, positions, len(records))
    assert ledger.lost == [] and ledger.duplicates == {}
