"""A short idle timeout under a backlog inside the worker: no late events, exact windows.

A slow user stage (1.5 s per batch, :mod:`tests.soak.slow_stage`) and small batches make
every batch wait several seconds in the agents' channels — longer than the 5 s
``idle_timeout_ms``. The input is in event-time order per partition, so no event may
be late, and every 10 s window holds exactly the brute-force count. Before the busy
set (:meth:`stream.runner.BatchRunner.busy_partitions`) the 1 s tick took such a
partition for idle, as its last correlated batch had been *fetched* more than 5 s
before, moved its watermark with the wall clock and closed windows under the queued
events: most of them arrived late (the soak run of 2026-12-02 counted 11.5M).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import orjson
import pytest

from stream.models import correlation_decoder
from stream.observability.scrape import scrape
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

EVENTS = 6_000
SOURCES = 12
STEP_MS = 10  # event time between consecutive events: 60 s of event time in all
WINDOW_MS = 10_000
MAX_BATCH = 300  # 20 batches: about 30 s behind the slow stage

PIPELINE = f"""
correlate:
  idle_timeout_ms: 5000
stages:
  - python: tests.soak.slow_stage:crawl
    after: enrich
    timeout: 20s
rules:
  - name: per-source
    kind: threshold
    group_by: [source]
    window: {{type: tumbling, size: {WINDOW_MS}ms}}
    aggregate: count
    when: ">= 1"
"""


def events(start_ms: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(EVENTS):
        source = f"svc-{i % SOURCES}"
        body = {
            "event_id": f"b-{i}",
            "type": "request",
            "source": source,
            "timestamp": start_ms + i * STEP_MS,
            "severity": "error",
        }
        out.append((source.encode(), orjson.dumps(body)))
    return out


def brute_force(records: list[tuple[bytes, bytes]]) -> dict[tuple[str, int], int]:
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for _, value in records:
        body = orjson.loads(value)
        counts[(body["source"], body["timestamp"] - body["timestamp"] % WINDOW_MS)] += 1
    return dict(counts)


def test_queued_batches_do_not_close_windows_early(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = PipelineTopics(kafka_bootstrap, partitions=4).create()
    start = int(time.time() * 1000) - 3_600_000
    start -= start % WINDOW_MS
    records = events(start)
    expected = brute_force(records)
    produce(kafka_bootstrap, topics.input, records)  # a backlog: the chain fills at once
    total = sum(end_offsets(kafka_bootstrap, topics.input).values())
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE)
    worker = WorkerProcess(
        topics,
        tmp_path,
        args=["--config", str(pipeline)],
        extra_env={"STREAM_MAX_BATCH": str(MAX_BATCH)},
    )

    def found() -> dict[tuple[str, int], int]:
        got = [
            correlation_decoder.decode(m.value())
            for m in read_all(kafka_bootstrap, topics.correlations)
        ]
        return {(c.group["source"], c.window_start): c.count for c in got if c.final}

    try:
        worker.wait_ready()
        wait_until(
            lambda: (
                sum(
                    max(o, 0)
                    for o in committed_offsets(kafka_bootstrap, topics.group, topics.input).values()
                )
                == total
            ),
            timeout=180,
            message="input committed",
        )
        # The last windows close by idleness (nothing follows them): 5 s after the end.
        # (Not an assertion: with windows closed early some never appear; the asserts
        # below say why.)
        deadline = time.monotonic() + 60
        while len(found()) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.5)
        metrics = scrape(worker.url("/metrics"))
        assert metrics is not None
        late = metrics.total("stream_late_events_total")
        batches = metrics.total("stream_batch_size_count")
    finally:
        assert worker.stop() == 0, worker.log()
    assert batches >= EVENTS / MAX_BATCH, "small batches, as configured"
    assert late == 0, f"{late:.0f} events late: windows closed under queued batches"
    assert found() == expected, "every window holds exactly the brute-force count"
