"""exactly_once on a real broker: read_committed readers see each input's outputs once.

* Scale-out and scale-in while events flow: every rebalance either commits the
  open transaction or aborts it and rewinds; a read_committed reader finds every
  event once, while a read_uncommitted reader may see the aborted copies.
* A zombie: worker A is frozen (SIGSTOP), a replacement with the same
  ``STREAM_GROUP_INSTANCE_ID`` (so the same transactional id) takes over and
  fences it. When A wakes up it must exit non-zero saying it was fenced, and
  nothing it produced after the fence may become visible.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    BackgroundProducer,
    Worker,
    account,
    inputs_of,
    numbered,
    pipeline_factory,
    read_topic,
    wait_all_committed,
    wait_for,
    workers,
)

__all__ = ["pipeline_factory"]

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

EOS = {"STREAM_PROCESSING_GUARANTEE": "exactly_once"}


def _ledger(pipeline: Any, positions: list[tuple[int, int]], count: int) -> Any:
    ids = [f"ev-{i}" for i in range(count)]
    return account(
        inputs_of(positions, ids, [True] * count),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )


def test_rebalances_under_load_keep_outputs_exactly_once(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=4)
    records = numbered(24_000)
    producer = BackgroundProducer(pipeline, records, rate=2_000)
    a, b, c = (Worker(pipeline, tmp_path, name, env=EOS) for name in "abc")
    with workers(a, b, c):
        a.start()
        a.wait_ready()
        producer.start()
        time.sleep(2)
        b.start()  # scale out: 1 -> 2 -> 3
        b.wait_ready()
        c.start()
        c.wait_ready()
        time.sleep(2)
        assert b.terminate()[0] == 0  # scale in: 3 -> 2
        time.sleep(2)
        positions = producer.finish()
        wait_all_committed(pipeline, timeout=90, workers=[a, c])
        for w in (a, c):
            assert w.terminate()[0] == 0, w.log_tail()
    ledger = _ledger(pipeline, positions, len(records))
    assert ledger.lost == []
    assert ledger.duplicates == {}
    uncommitted = read_topic(pipeline, pipeline.enriched, committed_only=False)
    assert len(uncommitted) >= ledger.enriched_out  # aborted copies only show up here


def test_fenced_zombie_exits_and_its_late_outputs_never_show(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    env = {**EOS, "STREAM_GROUP_INSTANCE_ID": "instance-1"}
    zombie = Worker(pipeline, tmp_path, "zombie", env=env)
    successor = Worker(pipeline, tmp_path, "successor", env=env)
    records = numbered(12_000)
    producer = BackgroundProducer(pipeline, records, rate=2_000)
    with workers(zombie, successor):
        zombie.start()
        zombie.wait_ready()
        producer.start()
        time.sleep(2)
        zombie.freeze()
        successor.start()  # same instance id: takes the membership and fences the producer
        successor.wait_ready()
        time.sleep(2)
        zombie.thaw()
        code = zombie.wait_exit(45)
        assert code != 0
        log = zombie.log_text().lower()
        assert "fenced" in log, zombie.log_tail()
        positions = producer.finish()
        wait_all_committed(pipeline, timeout=90, workers=[successor])
        assert successor.terminate()[0] == 0
    ledger = _ledger(pipeline, positions, len(records))
    assert ledger.lost == []
    assert ledger.duplicates == {}


def test_a_killed_workers_open_transaction_is_aborted_not_committed(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    """kill -9 mid-transaction: its records stay invisible to read_committed readers,
    and its successor (after transaction.timeout.ms at most) redoes them exactly once."""
    pipeline = pipeline_factory(partitions=1)
    victim = Worker(pipeline, tmp_path, "victim", env={**EOS, "STREAM_COMMIT_INTERVAL": "30"})
    successor = Worker(pipeline, tmp_path, "successor", env=EOS)
    records = numbered(5_000)
    with workers(victim, successor):
        victim.start()
        victim.wait_ready()
        producer = BackgroundProducer(pipeline, records, rate=5_000)
        producer.start()
        positions = producer.finish()
        wait_for(
            lambda: (
                victim.metric("stream_events_produced_total", topic=pipeline.enriched)
                >= len(records)
            ),
            30,
            "the victim to produce every output (uncommitted: commit interval 30 s)",
        )
        victim.kill()
        assert read_topic(pipeline, pipeline.enriched, committed_only=False, timeout=30)
        successor.start()
        wait_all_committed(pipeline, timeout=90, workers=[successor])
        assert successor.terminate()[0] == 0
    ledger = _ledger(pipeline, positions, len(records))
    assert ledger.lost == [] and ledger.duplicates == {}
    uncommitted = read_topic(pipeline, pipeline.enriched, committed_only=False)
    assert len(uncommitted) == 2 * len(records)  # the aborted copy is there, just invisible
