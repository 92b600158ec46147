"""The agent chain holds at most ``max_inflight_batches`` batches, on a real broker.

A slow async stage (200 ms per batch, ``tests.support.stages:slow_batches``) keeps the
chain full while a backlog waits. ``stream_batches_in_flight`` — counted when the fetch
loop hands a batch to the chain and when a link finishes or drops it — must reach the
limit and never pass it; without the bound the fetch loop would fill the first channel
and every hop behind the slow stage. Nothing is lost meanwhile (in = enriched + DLQ),
for two event shapes: the bundled observability events and a sensor pipeline of its
own schema.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chaos.harness import (
    Pipeline,
    Worker,
    numbered,
    pipeline_factory,
    produce,
    read_topic,
    wait_all_committed,
    workers,
)

__all__ = ["pipeline_factory"]

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

LIMIT = 2
STAGE = {"python": "tests.support.stages:slow_batches", "name": "slow"}


def _in_flight(worker: Worker) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("stream_batches_in_flight "):
            return float(line.split()[1])
    return None


class _Sampler(threading.Thread):
    """Reads the gauge every 50 ms while the worker drains the backlog."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            value = _in_flight(self.worker)
            if value is not None:
                self.samples.append(value)
            time.sleep(0.05)


def _sensor_records(count: int) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    records = []
    for i in range(count):
        value: dict[str, Any] = {"sensor": f"s-{i % 7}", "ts": now + i, "celsius": 20 + i % 5}
        if i % 50 == 0:
            value["celsius"] = "hot"  # a schema violation: to the DLQ
        records.append((f"s-{i % 7}".encode(), json.dumps(value).encode()))
    return records


SENSOR_PIPELINE: dict[str, Any] = {
    "pipeline": "sensors",
    "event_time": {"field": "ts"},
    "schema": {
        "sensor": {"type": "string", "required": True},
        "ts": {"type": "integer", "required": True},
        "celsius": {"type": "number", "required": True},
    },
}


@pytest.mark.parametrize("shape", ["observability", "sensors"])
def test_the_chain_never_holds_more_than_max_inflight_batches(
    shape: str, pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline: Pipeline = pipeline_factory(partitions=4)
    spec: dict[str, Any] = {"stages": [STAGE]}
    if shape == "sensors":
        spec = {**SENSOR_PIPELINE, **spec}
        records = _sensor_records(3_000)
        invalid = sum(1 for i in range(3_000) if i % 50 == 0)
    else:
        records = numbered(3_000)
        invalid = 0
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(spec))
    worker = Worker(
        pipeline,
        tmp_path,
        "w",
        args=["--config", str(config)],
        env={"STREAM_MAX_INFLIGHT_BATCHES": str(LIMIT), "STREAM_MAX_BATCH": "100"},
    )
    with workers(worker):
        produce(pipeline, records)  # a backlog before the worker starts: the chain fills
        worker.start()
        sampler = _Sampler(worker)
        sampler.start()
        try:
            wait_all_committed(pipeline, timeout=120, workers=[worker])
        finally:
            sampler.done.set()
            sampler.join(5)
        code, _ = worker.terminate()
        assert code == 0, worker.log_tail()

    busy = [v for v in sampler.samples if v > 0]
    assert busy, "the gauge never showed a batch in the chain"
    assert max(sampler.samples) <= LIMIT, f"more than {LIMIT} batches in flight: {max(busy)}"
    assert busy.count(LIMIT) >= 5, f"the chain never filled up to {LIMIT}: {sorted(set(busy))}"
    enriched = read_topic(pipeline, pipeline.enriched)
    dlq = read_topic(pipeline, pipeline.dlq)
    assert len(enriched) + len(dlq) == len(records)
    assert len(dlq) == invalid
