"""`stream dlq inspect|replay` against a real broker, plus the pure helpers behind them.

DLQ records are written here with a plain confluent Producer in exactly the
format the DLQ writer uses (original key/value/timestamp/headers + dlq.* headers).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient

from stream.cli import main
from stream.dlq_tools import (
    DlqFields,
    DlqToolError,
    RatePacer,
    ReplayFilter,
    dlq_fields,
    inspect_dlq,
    parse_filter,
    parse_time,
    replay_count,
    replay_dlq,
    replay_headers,
)
from stream.kafka import headers as h
from tests.support import pipeline as support

# ---------------------------------------------------------------------------------------------
# Pure helpers (no broker)
# ---------------------------------------------------------------------------------------------


def fields(**overrides: bytes | None) -> DlqFields:
    base: dict[str, bytes | None] = {
        "error_class": b"ValidationError",
        "stage": b"validate",
        "original_topic": b"events",
        "original_partition": b"0",
        "failed_at": b"2025-03-01T10:00:00.000+00:00",
        "replayed": None,
    }
    base.update(overrides)
    return DlqFields(**base)  # type: ignore[arg-type]


def test_dlq_fields_reads_the_dlq_headers_last_value_winning() -> None:
    headers = [
        ("traceparent", b"00-abc-def-01"),
        (h.DLQ_ERROR_CLASS, b"Old"),
        (h.DLQ_ERROR_CLASS, b"ValidationError"),
        (h.DLQ_STAGE, b"validate"),
        (h.DLQ_ORIGINAL_TOPIC, b"events"),
        (h.DLQ_ORIGINAL_PARTITION, b"3"),
        (h.DLQ_FAILED_AT, b"2025-03-01T10:00:00+00:00"),
        (h.REPLAYED, b"2"),
    ]
    assert dlq_fields(headers) == DlqFields(
        b"ValidationError", b"validate", b"events", b"3", b"2025-03-01T10:00:00+00:00", b"2"
    )
    assert dlq_fields(None) == DlqFields(b"", b"", b"", b"", b"", None)


def test_replay_headers_drop_dlq_headers_and_count_replays() -> None:
    original = [
        ("traceparent", b"tp"),
        (h.DLQ_ERROR_CLASS, b"X"),
        (h.REPLAYED, b"1"),
        ("app", None),
    ]
    assert replay_headers(original, replay_count(b"1")) == [
        ("traceparent", b"tp"),
        ("app", None),
        (h.REPLAYED, b"2"),
    ]
    assert replay_headers(None, 0) == [(h.REPLAYED, b"1")]
    assert replay_count(None) == 0
    assert replay_count(b"garbage") == 1


def test_filter_or_within_a_key_and_across_keys() -> None:
    f = ReplayFilter.build(
        [
            ("error_class", "ValidationError"),
            ("error_class", "LateEventError"),
            ("stage", "validate"),
        ]
    )
    assert f.matches(fields())
    assert f.matches(fields(error_class=b"LateEventError"))
    assert not f.matches(fields(error_class=b"RetryExhausted"))
    assert not f.matches(fields(stage=b"correlate"))
    assert ReplayFilter().matches(fields(error_class=b""))


def test_time_filter_uses_failed_at_since_inclusive_until_exclusive() -> None:
    f = ReplayFilter.build(
        since=parse_time("2025-03-01T10:00:00Z"), until=parse_time("2025-03-01T11:00:00")
    )
    assert f.matches(fields(failed_at=b"2025-03-01T10:00:00+00:00"))
    assert f.matches(fields(failed_at=b"2025-03-01T12:59:59+02:00"))  # 10:59:59Z
    assert not f.matches(fields(failed_at=b"2025-03-01T11:00:00Z"))
    assert not f.matches(fields(failed_at=b"2025-03-01T09:59:59.999Z"))
    assert not f.matches(fields(failed_at=b""))
    assert not f.matches(fields(failed_at=b"yesterday"))
    with pytest.raises(ValueError, match="earlier"):
        ReplayFilter.build(since=parse_time("2025-01-02"), until=parse_time("2025-01-01"))


def test_parse_filter_rejects_unknown_keys_and_missing_values() -> None:
    assert parse_filter("stage=enrich") == ("stage", "enrich")
    assert parse_filter("error_class=a=b") == ("error_class", "a=b")
    with pytest.raises(ValueError, match="unknown filter key"):
        parse_filter("colour=red")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_filter("stage")


def test_replaying_a_topic_into_itself_is_refused_before_connecting() -> None:
    with pytest.raises(DlqToolError, match="into itself"):
        replay_dlq({"bootstrap.servers": "127.0.0.1:1"}, target="events.dlq", topic="events.dlq")


def test_rate_pacer_holds_an_absolute_schedule() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    pacer = RatePacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert sleeps == pytest.approx([0.25, 0.25, 0.25, 0.25])
    now[0] += 2.0  # the sender fell behind: catch up without sleeping
    sleeps.clear()
    pacer.wait()
    assert sleeps == []


# ---------------------------------------------------------------------------------------------
# Against the broker
# ---------------------------------------------------------------------------------------------

#: Record timestamps an hour ago. They must be younger than the broker's retention
#: (7 days): with a fixed 2025 date the broker's 5-minutely retention check deleted
#: the test topics' records whenever it ran mid-test (CI failures: 0 of 25 read back).
BASE_TS = (int(time.time()) - 3600) * 1000


#: ``topic_factory(prefix, partitions, config) -> name`` (tests/conftest.py) makes fresh topics.
TopicFactory = Callable[..., str]


@dataclass(frozen=True)
class Failed:
    """One DLQ record to write: what failed, where it came from."""

    error_class: str
    stage: str
    original_topic: str = "events"
    original_partition: int = 0
    failed_at: str = "2025-01-01T10:05:00.000+00:00"
    replayed: int | None = None


def write_dlq(bootstrap: str, topic: str, records: list[Failed], partitions: int = 1) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, rec in enumerate(records):
        original_headers: list[tuple[str, bytes]] = [("traceparent", f"00-{i:032x}-01".encode())]
        if rec.replayed is not None:
            original_headers.append((h.REPLAYED, str(rec.replayed).encode()))
        dlq_headers = [
            (h.DLQ_ORIGINAL_TOPIC, rec.original_topic.encode()),
            (h.DLQ_ORIGINAL_PARTITION, str(rec.original_partition).encode()),
            (h.DLQ_ORIGINAL_OFFSET, str(1000 + i).encode()),
            (h.DLQ_ERROR_CLASS, rec.error_class.encode()),
            (h.DLQ_ERROR_MESSAGE, f"record {i} failed".encode()),
            (h.DLQ_STAGE, rec.stage.encode()),
            (h.DLQ_ATTEMPTS, b"1"),
            (h.DLQ_FAILED_AT, rec.failed_at.encode()),
        ]
        producer.produce(
            topic,
            key=f"key-{i}".encode(),
            value=json.dumps({"event_id": f"e{i}", "n": i, "pad": "x" * 300}).encode(),
            headers=original_headers + dlq_headers,
            timestamp=BASE_TS + i,
            partition=i % partitions,
        )
    assert producer.flush(30) == 0


def read_all(bootstrap: str, topic: str, partitions: int = 1) -> list[Message]:
    assert len(support.end_offsets(bootstrap, topic)) == partitions
    return support.read_all(bootstrap, topic)


def conf(bootstrap: str) -> dict[str, str]:
    return {"bootstrap.servers": bootstrap}


MIX = (
    [Failed("ValidationError", "validate")] * 30
    + [Failed("LateEventError", "correlate", original_partition=1)] * 20
    + [Failed("RetryExhausted", "enrich", original_topic="events.other")] * 9
    + [Failed("ValidationError", "validate", replayed=1)] * 3
)


@pytest.mark.broker
def test_inspect_counts_are_exact(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    dlq = topic_factory("dlq-test", 3)
    write_dlq(kafka_bootstrap, dlq, MIX, partitions=3)

    summary = inspect_dlq(conf(kafka_bootstrap), dlq, samples=2, max_value_chars=40)

    assert summary.scanned == 62
    assert summary.partitions == {0: (0, 21), 1: (0, 21), 2: (0, 20)}
    assert dict(summary.by_error_class) == {
        b"ValidationError": 33,
        b"LateEventError": 20,
        b"RetryExhausted": 9,
    }
    assert dict(summary.by_stage) == {b"validate": 33, b"correlate": 20, b"enrich": 9}
    assert dict(summary.by_original_topic) == {b"events": 53, b"events.other": 9}
    assert summary.already_replayed == 3
    assert not summary.limit_reached
    assert {k: len(v) for k, v in summary.samples.items()} == {
        b"ValidationError": 2,
        b"LateEventError": 2,
        b"RetryExhausted": 2,
    }
    sample = summary.samples[b"LateEventError"][0]
    assert sample.value is not None and sample.value.endswith(f"… ({sample.value_bytes} bytes)")
    assert len(sample.value.split("…")[0]) == 40
    assert (h.DLQ_STAGE, "correlate") in sample.headers
    assert sample.timestamp_ms is not None and sample.timestamp_ms >= BASE_TS

    limited = inspect_dlq(conf(kafka_bootstrap), dlq, limit=10, samples=0)
    assert limited.scanned == 10
    assert limited.limit_reached
    assert limited.samples == {}


@pytest.mark.broker
def test_inspect_cli_json_and_text(
    kafka_bootstrap: str, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    dlq = topic_factory("dlq-test")
    write_dlq(kafka_bootstrap, dlq, MIX)

    assert (
        main(
            [
                "dlq",
                "inspect",
                "--bootstrap-servers",
                kafka_bootstrap,
                "--topic",
                dlq,
                "--json",
                "--samples",
                "1",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["scanned"] == 62
    assert report["by_error_class"] == {
        "ValidationError": 33,
        "LateEventError": 20,
        "RetryExhausted": 9,
    }
    assert report["by_stage"] == {"validate": 33, "correlate": 20, "enrich": 9}
    assert [len(v) for v in report["samples"].values()] == [1, 1, 1]

    assert main(["dlq", "inspect", "--bootstrap-servers", kafka_bootstrap, "--topic", dlq]) == 0
    text = capsys.readouterr().out
    assert f"DLQ topic {dlq}: 62 record(s) in 1 partition(s); scanned 62" in text
    assert "        33   53.2%  ValidationError" in text


@pytest.mark.broker
def test_replay_with_filter_sends_exactly_the_matching_records(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    dlq = topic_factory("dlq-test", 2)
    target = topic_factory("dlq-test", 2)
    write_dlq(kafka_bootstrap, dlq, MIX, partitions=2)
    group = f"replay-{uuid.uuid4().hex[:8]}"

    report = replay_dlq(
        conf(kafka_bootstrap),
        target=target,
        topic=dlq,
        record_filter=ReplayFilter.build([("error_class", "LateEventError")]),
        group=group,
        force=True,  # stage correlate: the events were delivered (see the refusal test below)
    )

    assert (report.scanned, report.matched, report.replayed) == (62, 20, 20)
    assert (report.skipped_already_replayed, report.failed) == (0, 0)
    sent = read_all(kafka_bootstrap, target, partitions=2)
    assert len(sent) == 20
    originals = {
        m.key(): m
        for m in read_all(kafka_bootstrap, dlq, partitions=2)
        if dlq_fields(m.headers()).error_class == b"LateEventError"
    }
    for m in sent:
        source = originals[m.key()]
        assert m.value() == source.value()
        assert m.timestamp()[1] == source.timestamp()[1]
        headers = m.headers() or []
        assert [k for k, _ in headers if k.startswith("dlq.")] == [h.REPLAYED]
        assert h.header_value(headers, h.REPLAYED) == b"1"
        assert h.header_value(headers, "traceparent") == h.header_value(
            source.headers(), "traceparent"
        )


@pytest.mark.broker
def test_records_whose_event_was_delivered_are_refused_unless_forced(
    kafka_bootstrap: str, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """``late`` (late_policy: dlq) and anything dead-lettered at the correlate stage had its
    enriched record written already: replaying it would deliver the event twice."""
    dlq = topic_factory("dlq-test")
    write_dlq(
        kafka_bootstrap,
        dlq,
        [Failed("late", "correlate")] * 4
        + [Failed("unprocessable", "correlate")] * 2
        + [Failed("late", "validate")]  # the class alone is enough
        + [Failed("schema_violation", "validate")] * 3,
    )
    target = topic_factory("dlq-test")
    args = ["dlq", "replay", "--bootstrap-servers", kafka_bootstrap, "--topic", dlq]
    args += ["--to", target]

    assert main([*args, "--group", uuid.uuid4().hex]) == 0
    out = capsys.readouterr().out
    assert "refused-delivered         7" in out
    assert "already delivered" in out and "--force" in out
    assert len(read_all(kafka_bootstrap, target)) == 3, "only the schema violations went back"

    forced = topic_factory("dlq-test")
    report = replay_dlq(
        conf(kafka_bootstrap), target=forced, topic=dlq, group=uuid.uuid4().hex, force=True
    )
    assert (report.replayed, report.refused_delivered) == (10, 0)
    assert len(read_all(kafka_bootstrap, forced)) == 10


@pytest.mark.broker
def test_replay_to_the_original_topic_keeps_the_original_partition(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    dlq = topic_factory("dlq-test")
    events = topic_factory("dlq-test", 4)
    records = [
        Failed("X", "validate", original_topic=events, original_partition=p) for p in (3, 1, 2, 3)
    ]
    write_dlq(kafka_bootstrap, dlq, records)

    report = replay_dlq(conf(kafka_bootstrap), target=events, topic=dlq, group=uuid.uuid4().hex)

    assert report.replayed == 4
    by_partition = sorted((m.partition(), m.key()) for m in read_all(kafka_bootstrap, events, 4))
    assert by_partition == [(1, b"key-1"), (2, b"key-2"), (3, b"key-0"), (3, b"key-3")]


@pytest.mark.broker
def test_replaying_twice_does_not_duplicate_and_resumes_with_new_records(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    dlq = topic_factory("dlq-test", 2)
    target = topic_factory("dlq-test")
    write_dlq(kafka_bootstrap, dlq, [Failed("ValidationError", "validate")] * 25, partitions=2)
    group = f"replay-{uuid.uuid4().hex[:8]}"

    first = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=group)
    second = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=group)

    assert (first.scanned, first.replayed) == (25, 25)
    assert (second.scanned, second.matched, second.replayed) == (0, 0, 0)
    assert len(read_all(kafka_bootstrap, target)) == 25

    write_dlq(kafka_bootstrap, dlq, [Failed("ValidationError", "validate")] * 4, partitions=2)
    third = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=group)
    assert (third.scanned, third.replayed) == (4, 4)
    assert len(read_all(kafka_bootstrap, target)) == 29


@pytest.mark.broker
def test_already_replayed_records_are_skipped_unless_allowed(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    dlq = topic_factory("dlq-test")
    target = topic_factory("dlq-test")
    write_dlq(
        kafka_bootstrap,
        dlq,
        [Failed("ValidationError", "validate")] * 5
        + [Failed("ValidationError", "validate", replayed=1)] * 3
        + [Failed("ValidationError", "validate", replayed=2)] * 2,
    )

    report = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=uuid.uuid4().hex)
    assert (report.matched, report.replayed, report.skipped_already_replayed) == (10, 5, 5)
    assert (
        sorted(h.header_value(m.headers(), h.REPLAYED) for m in read_all(kafka_bootstrap, target))
        == [b"1"] * 5
    )

    target2 = topic_factory("dlq-test")
    again = replay_dlq(
        conf(kafka_bootstrap),
        target=target2,
        topic=dlq,
        group=uuid.uuid4().hex,
        allow_replayed=True,
    )
    assert (again.replayed, again.skipped_already_replayed) == (10, 0)
    counts = sorted(
        h.header_value(m.headers(), h.REPLAYED) for m in read_all(kafka_bootstrap, target2)
    )
    assert counts == [b"1"] * 5 + [b"2"] * 3 + [b"3"] * 2


@pytest.mark.broker
def test_dry_run_sends_and_commits_nothing(
    kafka_bootstrap: str, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    dlq = topic_factory("dlq-test")
    target = topic_factory("dlq-test")
    write_dlq(kafka_bootstrap, dlq, MIX)
    group = f"replay-{uuid.uuid4().hex[:8]}"
    args = [
        "dlq",
        "replay",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic",
        dlq,
        "--to",
        target,
        "--group",
        group,
        "--filter",
        "stage=validate",
        "--json",
    ]

    assert main([*args, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["dry_run"], dry["matched"], dry["replayed"], dry["skipped_already_replayed"]) == (
        True,
        33,
        30,
        3,
    )
    assert read_all(kafka_bootstrap, target) == []

    assert main(args) == 0
    real = json.loads(capsys.readouterr().out)
    assert (real["scanned"], real["replayed"], real["failed"]) == (62, 30, 0)
    assert len(read_all(kafka_bootstrap, target)) == 30


@pytest.mark.broker
def test_since_until_select_by_failure_time(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    dlq = topic_factory("dlq-test")
    target = topic_factory("dlq-test")
    times = [
        "2025-01-01T09:59:59.999+00:00",
        "2025-01-01T10:00:00.000+00:00",
        "2025-01-01T10:30:00.000+00:00",
        "2025-01-01T11:00:00.000+00:00",
    ]
    write_dlq(kafka_bootstrap, dlq, [Failed("E", "enrich", failed_at=t) for t in times])

    report = replay_dlq(
        conf(kafka_bootstrap),
        target=target,
        topic=dlq,
        group=uuid.uuid4().hex,
        record_filter=ReplayFilter.build(
            since=datetime(2025, 1, 1, 10, tzinfo=UTC), until=datetime(2025, 1, 1, 11, tzinfo=UTC)
        ),
    )
    assert report.matched == 2
    assert sorted(m.key() for m in read_all(kafka_bootstrap, target)) == [b"key-1", b"key-2"]


@pytest.mark.broker
def test_rate_limit_paces_the_replay(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    dlq = topic_factory("dlq-test")
    target = topic_factory("dlq-test")
    write_dlq(kafka_bootstrap, dlq, [Failed("E", "enrich")] * 41)
    started = time.monotonic()
    report = replay_dlq(
        conf(kafka_bootstrap), target=target, topic=dlq, group=uuid.uuid4().hex, rate=100
    )
    elapsed = time.monotonic() - started
    assert report.replayed == 41
    assert elapsed >= 0.4  # 41 records at 100/s: the last one may go at t = 0.40 s


@pytest.mark.broker
def test_missing_topics_and_unreachable_broker_give_one_line(
    kafka_bootstrap: str, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    assert main(["dlq", "inspect", "--bootstrap-servers", kafka_bootstrap, "--topic", missing]) == 1
    err = capsys.readouterr().err
    assert err == f"stream: error: topic {missing!r} does not exist on {kafka_bootstrap}\n"

    dlq = topic_factory("dlq-test")
    assert (
        main(
            [
                "dlq",
                "replay",
                "--bootstrap-servers",
                kafka_bootstrap,
                "--topic",
                dlq,
                "--to",
                missing,
            ]
        )
        == 1
    )
    assert "does not exist" in capsys.readouterr().err

    code = main(["dlq", "inspect", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("stream: error: cannot reach Kafka at 127.0.0.1:1 within 1s")


@pytest.mark.broker
def test_failed_deliveries_are_reported_and_not_committed(
    kafka_bootstrap: str, topic_factory: TopicFactory, kafka_admin: AdminClient
) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    dlq = topic_factory("dlq-test")
    # The broker refuses every batch: the test records' values alone are over 300 bytes.
    target = topic_factory("dlq-test", 1, {"max.message.bytes": "200"})
    write_dlq(kafka_bootstrap, dlq, [Failed("E", "enrich")] * 6)
    group = uuid.uuid4().hex

    failed = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=group)
    assert (failed.scanned, failed.matched, failed.replayed, failed.failed) == (6, 6, 0, 6)
    assert failed.first_error == "Broker: Message size too large"

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        target,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    kafka_admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    deadline = time.monotonic() + 15
    retried = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=group)
    while retried.failed and time.monotonic() < deadline:  # config change propagates async
        time.sleep(0.5)
        retried = replay_dlq(conf(kafka_bootstrap), target=target, topic=dlq, group=group)
    assert (retried.scanned, retried.replayed, retried.failed) == (6, 6, 0)
    assert len(read_all(kafka_bootstrap, target)) == 6
