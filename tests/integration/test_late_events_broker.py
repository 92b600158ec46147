"""Late events on a real broker: their own topic, never the DLQ (``late_policy: topic``).

Three producers write events whose event times span ten minutes, concurrently and
each at its own pace, into a 4-partition input: some producers run ahead of others
and 5% of the events are pushed back five minutes, so windows of the default
pipeline (60 s tumbling, 10 s grace) close before some of their events arrive. After
one worker drained it all:

* the DLQ holds exactly the invalid records — no valid event;
* every input record is either enriched or dead-lettered: in = enriched + DLQ;
* the late events are in ``<input>.late`` with the original bytes and
  ``stream.late.rule`` / ``stream.late.window_end`` headers, and each of them was
  also enriched (late ⊆ enriched): lateness is no failure.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from stream.config import load_settings
from stream.kafka import headers as h
from stream.loadgen.generator import GeneratedRecord, generate
from stream.pipelines.observability import enriched_decoder
from stream.runtime.outputs import LATE_RULE, LATE_WINDOW_END, LINEAGE_INPUT
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    read_all,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

PRODUCERS = 3
PER_PRODUCER = 3_000
SPAN_MS = 600_000  # ten minutes of event time per producer


def produce_concurrently(bootstrap: str, topic: str, batches: list[list[GeneratedRecord]]) -> None:
    """One producer thread per list, each flushing small chunks with its own pauses."""

    def run(records: list[GeneratedRecord], pause: float) -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(0, len(records), 200):
            for r in records[i : i + 200]:
                producer.produce(topic, r.value, r.key)
            producer.flush(30)
            time.sleep(pause)
        assert producer.flush(30) == 0

    threads = [
        threading.Thread(target=run, args=(records, 0.05 * (n + 1)))
        for n, records in enumerate(batches)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def test_late_events_go_to_their_topic_and_are_no_failure(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = PipelineTopics(kafka_bootstrap, partitions=4).create()
    late_topic = f"{topics.input}.late"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert late_topic in admin.list_topics(timeout=10).topics, "`stream topics create` made it"
    start = int(time.time() * 1000) - SPAN_MS - 60_000
    batches = [
        list(
            generate(
                PER_PRODUCER,
                seed=seed,
                start_ms=start,
                event_rate=PER_PRODUCER * 1000 // SPAN_MS,
                invalid_ratio=0.02,
                late_ratio=0.05,
                late_by_ms=300_000,
            )
        )
        for seed in range(1, PRODUCERS + 1)
    ]
    truth = {r.value: r for records in batches for r in records}
    worker = WorkerProcess(topics, tmp_path)
    try:
        worker.wait_ready(timeout=60)
        produce_concurrently(kafka_bootstrap, topics.input, batches)
        ends = end_offsets(kafka_bootstrap, topics.input)
        assert sum(ends.values()) == PRODUCERS * PER_PRODUCER
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, topics.group, topics.input) == ends,
            timeout=90,
            message="the worker committed everything",
        )
    finally:
        assert worker.stop() == 0, worker.log()

    inputs = read_all(kafka_bootstrap, topics.input)
    enriched_ids = [
        enriched_decoder.decode(m.value()).event_id
        for m in read_all(kafka_bootstrap, topics.enriched)
    ]
    dlq = read_all(kafka_bootstrap, topics.dlq)
    late = read_all(kafka_bootstrap, late_topic)

    valid_ids = {r.event_id for r in truth.values() if r.valid}
    assert set(enriched_ids) == valid_ids, "every valid event enriched, late ones included"
    assert len(enriched_ids) == len(valid_ids), "no duplicates in a clean run"
    dlq_truth = [truth[m.value()] for m in dlq]
    assert not [r for r in dlq_truth if r.valid], "no valid event in the DLQ"
    assert b"late" not in {h.header_value(m.headers() or [], h.DLQ_ERROR_CLASS) for m in dlq}
    assert len(inputs) == len(enriched_ids) + len(dlq), "in = enriched + DLQ"

    assert late, "the run produced late events"
    rules = {rule.name for rule in load_settings().correlate.rules}
    late_ids = set()
    for m in late:
        record = truth[m.value()]  # the original bytes
        assert record.valid
        hdrs = m.headers() or []
        rule = (h.header_value(hdrs, LATE_RULE) or b"").decode()
        window_end = int(h.header_value(hdrs, LATE_WINDOW_END) or b"0")
        assert rule in rules, rule
        assert window_end > record.event_time_ms - 3_600_000
        assert (h.header_value(hdrs, LINEAGE_INPUT) or b"").startswith(topics.input.encode())
        late_ids.add(record.event_id)
    assert late_ids <= set(enriched_ids), "late ⊆ enriched"
    pushed_back = sum(r.late for r in truth.values() if r.valid)
    print(
        f"\nin {len(inputs)} = enriched {len(enriched_ids)} + DLQ {len(dlq)}; late {len(late)} "
        f"(generator pushed back {pushed_back})"
    )
