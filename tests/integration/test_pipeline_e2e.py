"""End to end on a real broker: valid events enriched exactly once, invalid ones in the DLQ
with their reason, offsets committed to the log end; a restarted worker does not reprocess."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from stream.kafka import headers as h
from stream.loadgen import INVALID_KINDS
from stream.loadgen.generator import generate
from stream.loadgen.reference import reference_data
from stream.pipelines.observability import enriched_decoder
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

pytestmark = pytest.mark.broker

#: What each generated invalid kind must be classified as in ``dlq.error.class``.
EXPECTED_CLASS = {
    "not_json": "malformed_json",
    "missing_field": "schema_violation",
    "wrong_type": "schema_violation",
    "bad_enum": "schema_violation",
    "bad_timestamp": "bad_timestamp",
}
SOURCES = 40


def seed_reference(topics: PipelineTopics) -> dict[str, dict[str, str | int]]:
    import orjson

    data = reference_data(SOURCES)
    produce(
        topics.bootstrap, topics.reference, ((k.encode(), orjson.dumps(v)) for k, v in data.items())
    )
    return data


def all_committed(topics: PipelineTopics) -> bool:
    ends = end_offsets(topics.bootstrap, topics.input)
    return committed_offsets(topics.bootstrap, topics.group, topics.input) == ends


def test_valid_enriched_once_invalid_in_dlq_offsets_committed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = PipelineTopics(kafka_bootstrap, partitions=4).create()
    reference = seed_reference(topics)
    records = list(generate(10_000, seed=7, invalid_ratio=0.05, sources=SOURCES))
    valid = {r.event_id: r for r in records if r.valid}
    invalid = [r for r in records if not r.valid]
    assert {r.invalid_kind for r in invalid} == set(INVALID_KINDS)
    assert len(invalid) == pytest.approx(500, abs=60)

    produce(kafka_bootstrap, topics.input, ((r.key, r.value) for r in records))
    worker = WorkerProcess(topics, tmp_path)
    try:
        worker.wait_ready()
        wait_until(
            lambda: all_committed(topics), timeout=90, message="offsets committed to the log end"
        )
    finally:
        assert worker.stop() == 0, worker.log()

    enriched = [
        enriched_decoder.decode(m.value()) for m in read_all(kafka_bootstrap, topics.enriched)
    ]
    ids = collections.Counter(e.event_id for e in enriched)
    assert set(ids) == set(valid), "exactly the valid events are enriched"
    assert max(ids.values()) == 1, "each valid event once"
    for e in enriched:
        known = reference.get(e.source)
        assert e.enrichment.known_service is (known is not None)
        if known is not None:
            assert (e.enrichment.team, e.enrichment.tier) == (known["team"], known["tier"])
        assert e.event_time_ms == valid[e.event_id].event_time_ms

    dlq = read_all(kafka_bootstrap, topics.dlq)
    assert len(dlq) == len(invalid)
    expected_values = collections.Counter(r.value for r in invalid)
    assert collections.Counter(m.value() for m in dlq) == expected_values
    kind_of = {r.value: r.invalid_kind for r in invalid}
    for m in dlq:
        headers = m.headers() or []
        assert h.header_value(headers, h.DLQ_ORIGINAL_TOPIC) == topics.input.encode()
        assert h.header_value(headers, h.DLQ_STAGE) == b"validate"
        assert h.header_value(headers, h.DLQ_ERROR_MESSAGE)
        assert int(h.header_value(headers, h.DLQ_ORIGINAL_OFFSET) or b"-1") >= 0
        error_class = (h.header_value(headers, h.DLQ_ERROR_CLASS) or b"").decode()
        assert error_class == EXPECTED_CLASS[kind_of[m.value()]]

    assert committed_offsets(kafka_bootstrap, topics.group, topics.input) == end_offsets(
        kafka_bootstrap, topics.input
    )


def test_restarted_worker_does_not_reprocess_committed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = PipelineTopics(kafka_bootstrap, partitions=3).create()
    seed_reference(topics)
    records = list(generate(3_000, seed=11, sources=SOURCES))
    produce(kafka_bootstrap, topics.input, ((r.key, r.value) for r in records[:2_000]))

    first = WorkerProcess(topics, tmp_path)
    try:
        first.wait_ready()
        wait_until(lambda: all_committed(topics), timeout=90, message="first batch committed")
    finally:
        assert first.stop() == 0, first.log()
    assert len(read_all(kafka_bootstrap, topics.enriched)) == 2_000

    produce(kafka_bootstrap, topics.input, ((r.key, r.value) for r in records[2_000:]))
    second = WorkerProcess(topics, tmp_path)
    try:
        second.wait_ready()
        wait_until(lambda: all_committed(topics), timeout=90, message="second batch committed")
    finally:
        assert second.stop() == 0, second.log()
    ids = collections.Counter(
        enriched_decoder.decode(m.value()).event_id
        for m in read_all(kafka_bootstrap, topics.enriched)
    )
    assert len(ids) == 3_000
    assert max(ids.values()) == 1, "nothing committed was processed again"


def test_traceparent_propagates_and_batch_spans_link_to_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    topics = PipelineTopics(kafka_bootstrap, partitions=2).create()
    records = list(generate(200, seed=3, sources=SOURCES))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, r in enumerate(records):
        headers = (
            [("traceparent", f"00-{trace_id}-{i + 1:016x}-01".encode())] if i % 2 == 0 else None
        )
        producer.produce(topics.input, r.value, r.key, headers=headers)
    assert producer.flush(30) == 0

    worker = WorkerProcess(
        topics,
        tmp_path,
        extra_env={
            "STREAM_TRACING": "true",
            "STREAM_TRACING_SAMPLE_RATIO": "1.0",
            "OTEL_TRACES_EXPORTER": "console",
        },
    )
    try:
        worker.wait_ready()
        wait_until(lambda: all_committed(topics), timeout=90, message="offsets committed")
    finally:
        assert worker.stop() == 0, worker.log()

    by_id = {r.event_id: i for i, r in enumerate(records)}
    enriched = read_all(kafka_bootstrap, topics.enriched)
    assert len(enriched) == 200
    for m in enriched:
        i = by_id[enriched_decoder.decode(m.value()).event_id]
        parent = h.header_value(m.headers(), h.TRACEPARENT)
        if i % 2 == 0:
            assert parent == f"00-{trace_id}-{i + 1:016x}-01".encode()
        else:
            assert parent is None
    log = worker.log_path.read_text()
    assert f'"name": "process {topics.input}"' in log
    assert '"messaging.system": "kafka"' in log
    assert f'"trace_id": "0x{trace_id}"' in log, "batch spans link to the producers' traces"
