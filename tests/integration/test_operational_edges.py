"""Operational edges on a real broker: what an operator does to a running deployment.

Each test changes something under running workers and asserts the outcome, not timings:

* partitions added to the input topic are picked up; the changelog gets the matching
  partitions (the worker creates them); every input record is enriched or dead-lettered
  and the correlations equal an uninterrupted run's (no window state lost);
* offsets out of range (records deleted before the group consumed them): the configured
  ``auto.offset.reset`` is applied, ``stream_offsets_reset_total`` counts it, one log
  line per partition, and the partition goes on to its end;
* an output topic deleted mid-run (auto-create off): the worker commits nothing past the
  failure and exits non-zero with one clear line; recreated and restarted, every input is
  in enriched + DLQ;
* a stage that blocks its thread: ``/health`` answers 503 ``stalled`` naming the stage
  within a bounded time (the Kubernetes liveness probe asks ``/health``), and after 4x
  the stall limit every thread's stack is in the log, the blocked stage's among them;
* two workers started with the same ``group.instance.id``: the fenced one stops with one
  clear fatal line instead of looping.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from stream.loadgen import EventGenerator, GeneratorConfig
from stream.stages.user import StageBatch
from tests.chaos.harness import (
    Pipeline,
    Worker,
    account,
    by_window,
    committed_offsets,
    correlation_keys,
    end_offsets,
    inputs_of,
    numbered,
    pipeline_factory,
    produce,
    read_topic,
    reference_correlations,
    wait_all_committed,
    wait_for,
    workers,
)

__all__ = ["pipeline_factory"]

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

#: New partitions are found at the next metadata refresh; a second keeps the test short.
FAST_METADATA = json.dumps({"topic.metadata.refresh.interval.ms": "1000"})
#: Windows close by event time only, as in the in-process reference run.
NO_IDLE_CLOSE = {"STREAM_CORRELATE__IDLE_TIMEOUT_MS": "600000"}


def _admin(pipeline: Pipeline) -> AdminClient:
    return AdminClient(pipeline.conf())


def _partitions(pipeline: Pipeline, topic: str) -> int:
    # All topics: a metadata request naming the topic would create it again (auto-create).
    info = _admin(pipeline).list_topics(timeout=10).topics.get(topic)
    return 0 if info is None or info.error is not None else len(info.partitions)


def _generated(count: int, seed: int) -> list[Any]:
    config = GeneratorConfig(seed=seed, invalid_ratio=0.02, event_rate=25)
    return list(EventGenerator(config).records(count))


# -- 1. partitions added while workers run ------------------------------------------------------


def test_partitions_added_while_running_are_processed_with_state(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    generated = _generated(6_000, seed=41)
    records = [(r.key, r.value) for r in generated]
    env = {"STREAM_KAFKA": FAST_METADATA, **NO_IDLE_CLOSE}
    a = Worker(pipeline, tmp_path, "a", env=env)
    b = Worker(pipeline, tmp_path, "b", env=env)
    grown = dataclasses.replace(pipeline, partitions=4)
    with workers(a, b):
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready(assigned=False)
        positions = produce(pipeline, records[:3_000])
        wait_all_committed(pipeline, timeout=60, workers=(a, b))

        admin = _admin(pipeline)  # kept: a collected client fails its futures
        for future in admin.create_partitions([NewPartitions(pipeline.input, 4)]).values():
            future.result(timeout=30)

        def picked_up() -> bool:
            return sorted(a.assigned() + b.assigned()) == [0, 1, 2, 3]

        wait_for(picked_up, 30, "the new partitions to be assigned")
        positions += produce(grown, records[3_000:])  # a new producer sees 4 partitions
        assert {p for p, _ in positions[3_000:]} == {0, 1, 2, 3}
        wait_all_committed(grown, timeout=60, workers=(a, b))
        for w in (a, b):
            code, _ = w.terminate()
            assert code == 0, w.log_tail()

    assert _partitions(pipeline, pipeline.changelog) == 4
    ledger = account(
        inputs_of(positions, [r.event_id for r in generated], [r.valid for r in generated]),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )
    assert not ledger.lost and not ledger.misplaced
    assert ledger.enriched_out - ledger.duplicate_count + ledger.dlq_out == len(records)
    windows = by_window(correlation_keys(read_topic(pipeline, pipeline.correlations)))
    want = reference_correlations(records, positions)
    assert want, "the input closes no window: the state check would prove nothing"
    assert sorted(next(iter(v)) for v in windows.values()) == want
    assert all(len(v) == 1 for v in windows.values())


# -- 2. offsets out of range ---------------------------------------------------------------------

_RESET_LINE = re.compile(r"offset (\d+) of .*\[(\d+)\] is no longer on the broker")


def _delete_unconsumed(
    pipeline: Pipeline, worker: Worker
) -> tuple[list[tuple[int, int]], dict[int, int], dict[int, int]]:
    """Run ``worker`` over 2,000 records and stop it; write 2,000 more and delete the first
    300 of them per partition (retention or kafka-delete-records while it is away).
    Returns every input position, the committed offsets and the new log start offsets."""
    positions = produce(pipeline, numbered(2_000))
    worker.start()
    worker.wait_ready()
    wait_all_committed(pipeline, timeout=60, workers=[worker])
    assert worker.terminate()[0] == 0
    committed = committed_offsets(pipeline)
    positions += produce(pipeline, numbered(2_000, start=2_000))
    cut = {p: committed[p] + 300 for p in range(pipeline.partitions)}
    admin = _admin(pipeline)
    for p, o in cut.items():  # one call per partition: 2.12 left a two-partition call unanswered
        for future in admin.delete_records([TopicPartition(pipeline.input, p, o)]).values():
            future.result(timeout=30)
    return positions, committed, cut


def test_offsets_out_of_range_apply_the_reset_policy_once_per_partition(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    worker = Worker(pipeline, tmp_path, "w")
    with workers(worker):
        positions, committed, cut = _delete_unconsumed(pipeline, worker)
        worker.start()
        worker.wait_ready()
        wait_all_committed(pipeline, timeout=60, workers=[worker])
        resets = {
            p: worker.metric("stream_offsets_reset_total", partition=str(p))
            for p in range(pipeline.partitions)
        }
        assert worker.terminate()[0] == 0

    assert resets == {0: 1.0, 1: 1.0}
    lines = [m.groups() for m in _RESET_LINE.finditer(worker.log_text())]
    assert sorted(lines) == sorted((str(committed[p]), str(p)) for p in cut)
    # earliest (the default): everything still on the broker was processed, nothing else
    ids = [f"ev-{i}" for i in range(4_000)]
    kept = [pos[1] >= cut[pos[0]] or pos[1] < committed[pos[0]] for pos in positions]
    ledger = account(
        inputs_of(
            [pos for pos, k in zip(positions, kept, strict=True) if k],
            [i for i, k in zip(ids, kept, strict=True) if k],
            [True] * sum(kept),
        ),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )
    assert not ledger.lost and not ledger.duplicates and not ledger.misplaced
    assert ledger.enriched_out == sum(kept) == 4_000 - 600


def test_offsets_out_of_range_with_reset_error_stop_the_worker(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    env = {"STREAM_KAFKA": json.dumps({"auto.offset.reset": "error"})}
    strict = Worker(pipeline, tmp_path, "strict", env=env)
    with workers(Worker(pipeline, tmp_path, "w"), strict) as (worker, _):
        _, committed, _ = _delete_unconsumed(pipeline, worker)
        strict.start()
        assert strict.wait_exit(60) != 0
    assert committed_offsets(pipeline) == committed
    failures = [line for line in strict.log_text().splitlines() if "stopping the worker" in line]
    assert len(failures) == 1 and "auto.offset.reset=error" in failures[0], failures
    assert "Offset out of range" in failures[0]  # librdkafka's reason, not only ours


# -- 3. an output topic deleted mid-run ----------------------------------------------------------


def test_output_topic_deleted_mid_run_stops_the_worker_without_loss(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    env = {"STREAM_KAFKA": json.dumps({"allow.auto.create.topics": "false"})}
    worker = Worker(pipeline, tmp_path, "w", env=env)
    records = numbered(6_000)
    with workers(worker):
        worker.start()
        worker.wait_ready()
        positions = produce(pipeline, records[:2_000])
        wait_all_committed(pipeline, timeout=60, workers=[worker])

        admin = _admin(pipeline)
        admin.delete_topics([pipeline.enriched])[pipeline.enriched].result(timeout=30)
        wait_for(lambda: _partitions(pipeline, pipeline.enriched) == 0, 30, "the deletion")
        before = committed_offsets(pipeline)
        positions += produce(pipeline, records[2_000:])
        code = worker.wait_exit(60)
        after = committed_offsets(pipeline)
        log = worker.log_text()

        assert code != 0
        assert after == before, "input offsets were committed past the failure"
        failures = [line for line in log.splitlines() if "stopping the worker" in line]
        assert len(failures) == 1, log[-3000:]
        assert pipeline.enriched in failures[0]

        new = NewTopic(pipeline.enriched, num_partitions=pipeline.partitions)
        admin.create_topics([new])[pipeline.enriched].result(timeout=30)
        wait_for(lambda: _partitions(pipeline, pipeline.enriched) == 2, 30, "the topic")
        worker.start()
        wait_all_committed(pipeline, timeout=60, workers=[worker])
        assert worker.terminate()[0] == 0

    ids = [f"ev-{i}" for i in range(len(records))]
    ledger = account(
        inputs_of(positions, ids, [True] * len(ids)),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )
    # the first 2,000 went to the deleted topic; everything produced after it is there
    later = {pos for pos in positions[2_000:]}
    assert not [pos for pos in ledger.lost if pos in later]
    assert not ledger.misplaced


# -- 4. a stage that blocks its thread -----------------------------------------------------------

HANG_MARK = "hang-"
_released = threading.Event()


def hang_on_mark(batch: StageBatch) -> None:
    """A sync user stage that blocks its thread when an event id starts with ``hang-``
    (what a call without a timeout to a dead service does)."""
    if any(str(getattr(e, "event_id", "")).startswith(HANG_MARK) for e in batch.events):
        _released.wait()


def _health(worker: Worker) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health", timeout=2) as r:
            return r.status, dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read() or b"{}"))
    except (OSError, ValueError):
        return None


def test_a_stage_blocking_its_thread_fails_liveness_naming_it(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=1)
    config = tmp_path / "pipeline.yaml"
    stage = {"python": "tests.integration.test_operational_edges:hang_on_mark", "name": "blocker"}
    config.write_text(yaml.safe_dump({"stages": [stage]}))
    worker = Worker(
        pipeline,
        tmp_path,
        "w",
        args=["--config", str(config)],
        env={"STREAM_STALL_TIMEOUT": "5"},
    )
    with workers(worker):
        worker.start()
        worker.wait_ready()
        produce(pipeline, numbered(100))
        wait_all_committed(pipeline, timeout=60, workers=[worker])
        assert _health(worker) == (200, {"status": "ok"})

        produce(pipeline, numbered(1, prefix="hang"))
        started = time.monotonic()

        def stalled() -> tuple[int, dict[str, Any]] | None:
            answer = _health(worker)
            return answer if answer is not None and answer[0] == 503 else None

        _, body = wait_for(stalled, 30, "/health to report the stall")
        assert body["status"] == "stalled" and body["stage"] == "blocker", body
        assert body["seconds"] >= 5 and time.monotonic() - started < 30  # STREAM_STALL_TIMEOUT
        assert worker.running
        assert worker.log_text().count("stage blocker has not returned") == 1
        # The poll loop waits on the runner lock the blocked stage holds: after 4x the
        # stall limit every thread's stack is in the log, the blocked stage's among them.
        wait_for(lambda: "hang_on_mark" in worker.log_text(), 40, "the stack dump")
        assert "most recent call first" in worker.log_text()

    manifest = Path(__file__).resolve().parents[2] / "deploy/k8s/base/deployment.yaml"
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "Deployment"]
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


# -- 5. two workers with the same group.instance.id ---------------------------------------------


def test_fenced_instance_id_stops_the_worker_as_fatal(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    pipeline = pipeline_factory(partitions=2)
    env = {"STREAM_GROUP_INSTANCE_ID": "same-instance"}
    first = Worker(pipeline, tmp_path, "first", env=env)
    second = Worker(pipeline, tmp_path, "second", env=env)
    with workers(first, second):
        first.start()
        first.wait_ready()
        produce(pipeline, numbered(500))
        wait_all_committed(pipeline, timeout=60, workers=[first])
        second.start()
        code = first.wait_exit(60)
        assert code != 0
        fatal = [line for line in first.log_text().splitlines() if "stopping the worker" in line]
        assert len(fatal) == 1, first.log_tail()
        assert "same-instance" in fatal[0] and "fenced" in fatal[0].lower()
        second.wait_ready()
        produce(pipeline, numbered(500, start=500))
        wait_all_committed(pipeline, timeout=60, workers=[second])
        assert second.terminate()[0] == 0
    assert sum(end_offsets(pipeline, pipeline.input).values()) == 1_000
