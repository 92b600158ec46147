"""Worker lifecycle on a real broker: SIGTERM, failures, static membership.

* SIGTERM mid-run: exit 0 within ``shutdown_grace``; what the worker committed
  is exactly what it wrote outputs for; a second worker continues from there
  with no record lost or repeated (``at_least_once``, clean shutdown).
* A failure — a batch that raises, or a checkpoint whose records the broker
  refuses — makes the worker exit non-zero without committing past it.
* Static membership (``STREAM_GROUP_INSTANCE_ID``): a restarted instance gets
  its partitions back without moving anyone else's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    BackgroundProducer,
    Worker,
    account,
    committed_offsets,
    inputs_of,
    numbered,
    pipeline_factory,
    produce,
    read_topic,
    wait_all_committed,
    wait_for,
    workers,
)

__all__ = ["pipeline_factory"]

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

SHUTDOWN_GRACE_S = 25.0


def test_sigterm_mid_run_commits_exactly_what_was_processed(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=4)
    records = numbered(30_000)
    producer = BackgroundProducer(pipeline, records, rate=3_000)
    first = Worker(pipeline, tmp_path, "first")
    second = Worker(pipeline, tmp_path, "second")
    with workers(first, second):
        first.start()
        first.wait_ready()
        producer.start()
        wait_for(lambda: sum(committed_offsets(pipeline).values()) > 5_000, 30, "progress")
        code, took = first.terminate()
        assert code == 0, first.log_tail()
        assert took < SHUTDOWN_GRACE_S
        log = first.log_text()
        assert "final checkpoint deferred" not in log and "final checkpoint failed" not in log
        stopped_at = committed_offsets(pipeline)

        positions = producer.finish()
        ids = [f"ev-{i}" for i in range(len(records))]
        by_id = dict(zip(ids, positions, strict=True))
        written = {
            by_id[json.loads(r.value or b"{}")["event_id"]]
            for r in read_topic(pipeline, pipeline.enriched)
        }
        committed_range = {(p, o) for p, end in stopped_at.items() for o in range(end)}
        assert written == committed_range, "outputs and committed offsets disagree"
        assert len(written) < len(records), "SIGTERM came too late to be mid-run"

        second.start()
        wait_all_committed(pipeline, timeout=60, workers=[second])
        assert second.terminate()[0] == 0

    ledger = account(
        inputs_of(positions, ids, [True] * len(ids)),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )
    assert ledger.lost == []
    assert ledger.duplicates == {}, "a clean shutdown must not cause replays"


@pytest.mark.parametrize("failure", ["batch", "checkpoint"])
def test_failure_exits_non_zero_without_committing_past_it(
    failure: str, pipeline_factory: Any, tmp_path: Path
) -> None:
    """``batch``: producing the output raises inside the batch (larger than the client's
    message.max.bytes). ``checkpoint``: the broker refuses the output at flush time (larger
    than the topic's max.message.bytes)."""
    if failure == "batch":
        pipeline = pipeline_factory(
            partitions=1, topic_config={"input": {"max.message.bytes": "3000000"}}
        )
        env = {"STREAM_VALIDATION__MAX_EVENT_BYTES": "3000000"}
        poison = numbered(1, start=100, pad=1_200_000)
    else:
        pipeline = pipeline_factory(
            partitions=1, topic_config={"enriched": {"max.message.bytes": "3000"}}
        )
        env = {}
        poison = numbered(1, start=100, pad=6_000)
    worker = Worker(pipeline, tmp_path, "w", env=env)
    with workers(worker):
        produce(pipeline, numbered(100))
        worker.start()
        worker.wait_ready()
        wait_for(lambda: committed_offsets(pipeline).get(0) == 100, 30, "the first commit")
        big = {"message.max.bytes": 3_000_000}
        [(_, poison_offset)] = produce(pipeline, poison + numbered(20, start=101), **big)[:1]
        code = worker.wait_exit(60)
    assert code != 0
    assert committed_offsets(pipeline)[0] <= poison_offset
    log = worker.log_text()
    assert "stopping the worker without committing" in log
    assert "Message size too large" in log or "MSG_SIZE_TOO_LARGE" in log


def test_static_member_gets_its_partitions_back_without_moving_others(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=4)
    a = Worker(pipeline, tmp_path, "a", env={"STREAM_GROUP_INSTANCE_ID": "worker-a"})
    b = Worker(pipeline, tmp_path, "b", env={"STREAM_GROUP_INSTANCE_ID": "worker-b"})
    with workers(a, b):
        a.start()
        a.wait_ready()
        b.start()
        wait_for(lambda: len(a.assigned()) == 2 and len(b.assigned()) == 2, 60, "a 2+2 split")
        owned_a, owned_b = a.assigned(), b.assigned()
        rebalances_b = b.metric("stream_rebalances_total")
        assert a.terminate()[0] == 0
        a.start()
        assert sorted(a.wait_ready()) == sorted(owned_a)
        time.sleep(2)
        assert b.assigned() == owned_b
        assert b.metric("stream_rebalances_total") == rebalances_b, "b saw a rebalance"
        produce(pipeline, numbered(1_000))
        wait_all_committed(pipeline, timeout=60, workers=[a, b])
