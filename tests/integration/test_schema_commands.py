"""``stream schema infer|check`` against a real broker, on two event shapes.

Orders (a nested object and an array of objects) and sensor readings (numbers,
date-times, a shape that changed over time) are produced with a plain
confluent-kafka Producer; the inferred schema is compared whole, then ``check``
must count exactly the records and reasons that were planted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from stream.cli import main

pytestmark = pytest.mark.broker


def produce(bootstrap: str, topic: str, values: list[bytes | None], partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=str(i).encode(), partition=i % partitions)
    assert producer.flush(30) == 0


def order(i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "order-id": f"o-{i}",
        "status": ["new", "paid", "shipped"][i % 3],
        "created_at": f"2026-12-02T10:{i % 60:02d}:{i % 7:02d}+01:00",
        "shipping": {"country": ["DE", "FR"][i % 2], "city": f"c{i}"},
        "items": [{"sku": f"s{j}", "qty": 1 + j} for j in range(1 + i % 3)],
        "total": 9.5 + i,
    }
    if i % 4 == 0:
        doc["shipping"]["zip"] = f"{10000 + i}"
    return doc


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_orders_infer_then_check(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory("schema-orders", partitions=3)
    produce(kafka_bootstrap, topic, [json.dumps(order(i)).encode() for i in range(300)], 3)
    common = ["--topic", topic, "--bootstrap-servers", kafka_bootstrap]

    code, out, err = run(["schema", "infer", *common], capsys)
    assert code == 0, err
    schema = json.loads(out)
    assert f"inferred from 300 records of {topic}" in err
    assert schema["type"] == "object"
    assert schema["properties"] == {
        "order-id": {"type": "string"},
        "status": {"type": "string", "enum": ["new", "paid", "shipped"]},
        "created_at": {"type": "string", "format": "date-time"},
        "shipping": {
            "type": "object",
            "properties": {
                "country": {"type": "string", "enum": ["DE", "FR"]},
                "city": {"type": "string"},
                "zip": {"type": "string"},
            },
            "required": ["country", "city"],
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "enum": ["s0", "s1", "s2"]},
                    "qty": {"type": "integer"},
                },
                "required": ["sku", "qty"],
            },
        },
        "total": {"type": "number"},
    }
    assert schema["required"] == ["order-id", "status", "created_at", "shipping", "items", "total"]

    path = tmp_path / "orders.schema.json"
    path.write_text(out)
    bad = [
        {**order(1000), "status": "lost"},  # not in the enum
        {**order(1001), "items": [{"sku": "s0", "qty": "2"}]},  # qty a string
        {**order(1002), "items": [{"sku": "s0", "qty": 1}, {"sku": "s1", "qty": 1.5}]},
        {k: v for k, v in order(1003).items() if k != "order-id"},  # missing required
        {**order(1004), "created_at": "2026-12-02 10:00"},  # not a date-time
    ]
    values: list[bytes | None] = [json.dumps(doc).encode() for doc in bad]
    values += [b"{not json", None]
    produce(kafka_bootstrap, topic, values, 3)

    check = ["schema", "check", *common, "--schema", str(path)]
    code, out, err = run([*check, "--json", "--top", "10"], capsys)
    assert code == 1  # some records would be rejected
    report = json.loads(out)
    assert (report["records"], report["valid"], report["rejected"]) == (307, 300, 7)
    assert report["not_json"] == 2
    fields = report["fields"]
    assert fields["order-id"] == {"present": 304, "non_null": 304, "valid": 304}
    assert fields["status"] == {"present": 305, "non_null": 305, "valid": 304}
    assert fields["items"]["valid"] == 303  # two bad item lists
    assert fields["shipping.zip"]["present"] == 75 + sum(1 for i in range(1000, 1005) if i % 4 == 0)
    reasons = {r["reason"]: r["count"] for r in report["top_reasons"]}
    assert reasons["Expected `int`, got `str` - at `$.items[*].qty`"] == 1
    assert reasons["Expected `int`, got `float` - at `$.items[*].qty`"] == 1
    assert reasons["Invalid enum value - at `$.status`"] == 1
    assert reasons["no value (tombstone)"] == 1
    assert len(reasons) == 7  # every planted record has its own reason

    code, out, err = run([*check, "--top", "10"], capsys)
    assert code == 1
    assert out.splitlines()[0] == (
        f"{topic}: 307 records checked against {path}: 300 valid (97.7%), 7 rejected "
        "(2 empty or not JSON)"
    )
    assert "Object missing required field `order-id`" in out
    assert "Invalid RFC3339 encoded datetime - at `$.created_at`" in out
    assert "check: [##############################] 100% 307/307 records" in err


def reading(i: int, *, humidity: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sensor": f"s-{i % 40}",
        "ts": f"2026-12-02T10:00:{i % 60:02d}.{i % 1000:03d}Z",
        "temp_c": round(18 + (i % 70) / 10, 1) if i % 2 else 20,
        "battery": {"level": (i % 100) / 100, "charging": i % 2 == 0},
    }
    if humidity:
        doc["humidity"] = None if i % 50 == 0 else i % 100
    return doc


def test_sensor_readings_latest_sample_and_check(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory("schema-sensors", partitions=2)
    old = [reading(i, humidity=False) for i in range(200)]
    new = [reading(i, humidity=True) for i in range(200, 400)]
    produce(kafka_bootstrap, topic, [json.dumps(d).encode() for d in old + new], 2)
    common = ["--topic", topic, "--bootstrap-servers", kafka_bootstrap]

    code, out, err = run(["schema", "infer", *common, "--sample", "100"], capsys)
    assert code == 0, err
    latest = json.loads(out)
    assert "inferred from 100 records" in err
    assert latest["properties"] == {
        "sensor": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
        "temp_c": {"type": "number"},
        "battery": {
            "type": "object",
            "properties": {"level": {"type": "number"}, "charging": {"type": "boolean"}},
            "required": ["level", "charging"],
        },
        "humidity": {"type": ["integer", "null"]},
    }
    assert latest["required"] == ["sensor", "ts", "temp_c", "battery", "humidity"]

    code, out, err = run(["schema", "infer", *common], capsys)
    assert code == 0, err
    everything = json.loads(out)
    assert everything["required"] == ["sensor", "ts", "temp_c", "battery"]  # half lack humidity

    path = tmp_path / "sensors.schema.json"
    path.write_text(json.dumps(latest))
    code, out, err = run(["schema", "check", *common, "--schema", str(path), "--json"], capsys)
    report = json.loads(out)
    assert (report["records"], report["valid"], report["rejected"]) == (400, 200, 200)
    assert report["top_reasons"] == [
        {
            "reason": "Object missing required field `humidity`",
            "count": 200,
            "samples": [report["top_reasons"][0]["samples"][0]],
        }
    ]
    assert report["fields"]["humidity"] == {"present": 200, "non_null": 196, "valid": 200}
    assert report["fields"]["battery.level"] == {"present": 400, "non_null": 400, "valid": 400}

    code, out, err = run(
        ["schema", "check", *common, "--schema", str(path), "--sample", "50", "--json"], capsys
    )
    assert code == 0  # the latest 50 all carry humidity
    assert json.loads(out)["records"] == 50


def test_unknown_topic_and_bad_schema_are_one_line_errors(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"properties": {"a": {"oneOf": []}}}))
    bad = str(tmp_path / "bad.json")
    code, _, err = run(
        [
            "schema",
            "check",
            "--topic",
            "x",
            "--schema",
            bad,
            "--bootstrap-servers",
            kafka_bootstrap,
        ],
        capsys,
    )
    assert code == 2, err
    assert err.strip().endswith("/properties/a: keyword 'oneOf' is not supported")
    code, _, err = run(
        ["schema", "infer", "--topic", "no-such-topic-zz", "--bootstrap-servers", kafka_bootstrap],
        capsys,
    )
    assert code == 2, err
    assert "topic 'no-such-topic-zz' does not exist" in err
