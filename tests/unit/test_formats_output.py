"""Output formats without a registry (a stand-in client answers the few calls start-up makes):

* a record its output schema refuses is a reject (stage ``encode`` in the DLQ, the field
  and the reason in the message) while the rest of the batch is written — Avro, Protobuf
  and JSON Schema, in the encoder and through the whole chain (PipelineDriver);
* Protobuf output frames the file's first message (message-index list ``[0]``);
* a schema taken from the registry is part of the pipeline digest (lineage header).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka.schema_registry import Schema
from fastavro import parse_schema, schemaless_reader

from stream.errors import FatalError
from stream.formats import pipeline as formats
from stream.formats.output import OUTPUT_SCHEMA_VIOLATION, OutputEncoder, protobuf_message_class
from stream.kafka import headers as h
from stream.runtime.outputs import LINEAGE_DIGEST
from stream.testing import PipelineDriver

URL = "http://registry.invalid:8081"
T0 = "2026-12-02T10:00:00Z"

ENRICHED_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Enriched",
    "namespace": "shop",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "event_time_ms", "type": "long"},
        {
            "name": "enrichment",
            "type": {
                "type": "record",
                "name": "Enrichment",
                "fields": [{"name": "size", "type": "double"}],
            },
        },
    ],
}
ENRICHED_PROTO = """syntax = "proto3";
package shop;
message Enriched {
  string order_id = 1;
  double amount = 2;
  int64 event_time_ms = 3;
  message Enrichment { double size = 1; }
  Enrichment enrichment = 4;
}
"""
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number"},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "required": ["order_id", "amount", "created_at"],
}


@dataclass
class StandInRegistry:
    """The registry calls start-up makes; ``latest`` holds each subject's latest schema."""

    latest: dict[str, Schema] = field(default_factory=dict)
    registered: dict[str, list[str]] = field(default_factory=dict)

    def get_latest_version(self, subject: str) -> Any:
        schema = self.latest[subject]
        return type("Version", (), {"schema": schema, "version": 1})()

    def test_compatibility(self, subject: str, schema: Schema) -> bool:
        return True

    def register_schema(self, subject: str, schema: Schema) -> int:
        texts = self.registered.setdefault(subject, [])
        if schema.schema_str not in texts:
            texts.append(schema.schema_str)
        return 100 + texts.index(schema.schema_str)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> StandInRegistry:
    stand_in = StandInRegistry()
    monkeypatch.setattr(formats, "make_client", lambda *args, **kwargs: stand_in)
    return stand_in


def encoder(fmt: str, schema: str, registry: StandInRegistry) -> OutputEncoder:
    return OutputEncoder(fmt, URL, registry, {"out": schema}, "topic")  # type: ignore[arg-type]


def value(n: int, size: Any) -> bytes:
    return orjson.dumps(
        {"order_id": f"o{n}", "amount": float(n), "event_time_ms": n, "enrichment": {"size": size}}
    )


# -- the encoder ---------------------------------------------------------------------------------


def test_avro_records_that_do_not_fit_are_rejects_naming_the_field(
    registry: StandInRegistry,
) -> None:
    enc = encoder("avro", json.dumps(ENRICHED_AVRO), registry)
    values = [value(0, 0.0), value(1, "large"), value(2, 2.0), b'{"order_id": "o3"}']
    out, rejects = enc.encode_records("out", values)
    assert [r.position for r in rejects] == [1, 3]
    assert {r.error_class for r in rejects} == {OUTPUT_SCHEMA_VIOLATION}
    assert "field shop.Enrichment.size: str 'large', expected double" in rejects[0].message
    assert "subject out-value" in rejects[0].message
    assert "field shop.Enriched.amount: missing" in rejects[1].message
    parsed = parse_schema(ENRICHED_AVRO)
    assert len(out) == 2
    for payload, n in zip(out, (0, 2), strict=True):
        assert payload[:5] == b"\x00" + (100).to_bytes(4, "big")
        record: Any = schemaless_reader(BytesIO(payload[5:]), parsed)
        assert record["order_id"] == f"o{n}" and record["enrichment"] == {"size": float(n)}


def test_protobuf_frames_the_first_message_and_rejects_what_does_not_parse(
    registry: StandInRegistry,
) -> None:
    enc = encoder("protobuf", ENRICHED_PROTO, registry)
    out, rejects = enc.encode_records("out", [value(0, 1.5), value(1, "large"), value(2, 3.0)])
    assert [r.position for r in rejects] == [1]
    assert "enrichment.size" in rejects[0].message and "large" in rejects[0].message
    assert registry.registered["out-value"] == [ENRICHED_PROTO]
    cls = protobuf_message_class(ENRICHED_PROTO, "test")
    header = b"\x00" + (100).to_bytes(4, "big") + b"\x00"  # id, then message indexes [0]
    assert [p[:6] for p in out] == [header, header]
    decoded = cls.FromString(out[1][6:])
    assert (decoded.order_id, decoded.event_time_ms, decoded.enrichment.size) == ("o2", 2, 3.0)

    # What only the proto3 JSON mapping takes (int64 as a string, an unknown nested field)
    mapped = b'{"order_id": "o9", "event_time_ms": "9", "enrichment": {"size": 1, "x": 2}}'
    (payload,), rejects = enc.encode_records("out", [mapped])
    assert rejects == []
    assert cls.FromString(payload[6:]).event_time_ms == 9


def test_json_schema_output_is_checked_against_its_schema(registry: StandInRegistry) -> None:
    schema = formats.enriched_json_schema(ORDER_SCHEMA)
    enc = encoder("json_schema", json.dumps(schema), registry)
    good = orjson.dumps(
        {"order_id": "o1", "amount": 1.0, "created_at": T0, "event_time_ms": 1, "enrichment": {}}
    )
    wrong = good.replace(b'"amount":1.0', b'"amount":"one"')
    out, rejects = enc.encode_records("out", [good, wrong])
    assert out == [b"\x00" + (100).to_bytes(4, "big") + good]
    assert [r.position for r in rejects] == [1]
    assert "$.amount" in rejects[0].message


def test_built_in_schemas_refusing_a_record_is_fatal(registry: StandInRegistry) -> None:
    enc = encoder("avro", json.dumps(formats.CORRELATION_AVRO), registry)
    with pytest.raises(FatalError, match="does not fit the avro output schema"):
        enc.encode_values("out", [b'{"rule": 1}'])


# -- through the chain ---------------------------------------------------------------------------


def write_pipeline(tmp_path: Path, **keys: Any) -> Path:
    """A pipeline file in ``tmp_path``; ``schema_file=`` a JSON Schema dict is written beside it."""
    if isinstance(keys.get("schema_file"), dict):
        (tmp_path / "order.schema.json").write_text(json.dumps(keys["schema_file"]))
        keys["schema_file"] = "order.schema.json"
    spec = {
        "pipeline": "orders-out",
        "topics": {"input": "orders", "enriched": "orders.enriched", "dlq": "orders.dlq"},
        "event_id": "order_id",
        "event_time": {"field": "created_at"},
        "schema_registry": {"url": URL},
        **keys,
    }
    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("fmt", "schema_file", "schema_text"),
    [
        ("avro", "enriched.avsc", json.dumps(ENRICHED_AVRO)),
        ("protobuf", "enriched.proto", ENRICHED_PROTO),
    ],
)
def test_a_record_the_output_schema_refuses_is_dead_lettered_and_the_batch_goes_on(
    registry: StandInRegistry, tmp_path: Path, fmt: str, schema_file: str, schema_text: str
) -> None:
    (tmp_path / schema_file).write_text(schema_text)
    pipeline = write_pipeline(
        tmp_path,
        schema_file=ORDER_SCHEMA,
        # A derived value of the wrong type for the output schema on large orders only.
        derive={"size": "amount >= 5.0 ? 'large' : amount * 2.0"},
        output_format=fmt,
        output_schema_file=schema_file,
    )
    driver = PipelineDriver(pipeline)
    driver.send_many({"order_id": f"o{n}", "amount": float(n), "created_at": T0} for n in range(8))
    out = driver.run()
    assert len(out.enriched) + len(out.dlq) == 8
    assert len(out.enriched) == 5
    assert all(r.value and r.value[:1] == b"\x00" for r in out.enriched)
    for record in out.dlq:
        assert record.header(h.DLQ_STAGE) == b"encode"
        assert record.header(h.DLQ_ERROR_CLASS) == OUTPUT_SCHEMA_VIOLATION.encode()
        message = (record.header(h.DLQ_ERROR_MESSAGE) or b"").decode()
        assert "size" in message and "large" in message, message
        assert record.json()["amount"] >= 5  # the original input record, as it came
    assert sorted(r.json()["order_id"] for r in out.dlq) == ["o5", "o6", "o7"]


# -- the lineage digest of a schema from the registry --------------------------------------------


def test_a_schema_from_the_registry_is_part_of_the_pipeline_digest(
    registry: StandInRegistry, tmp_path: Path
) -> None:
    pipeline = write_pipeline(tmp_path, schema={"registry_subject": "orders-value"}, lineage="full")
    registry.latest["orders-value"] = Schema(json.dumps(ORDER_SCHEMA), "JSON")
    order = {"order_id": "o1", "amount": 1.0, "created_at": T0}

    def digest_written() -> tuple[str, bytes | None]:
        driver = PipelineDriver(pipeline)
        driver.send(order)
        (record,) = driver.run().enriched
        return driver.settings.pipeline_digest, record.header(LINEAGE_DIGEST)

    first, header = digest_written()
    assert header == first.encode()
    assert digest_written()[0] == first  # the same schema, the same digest

    v2 = {**ORDER_SCHEMA, "properties": {**ORDER_SCHEMA["properties"], "note": {"type": "string"}}}
    registry.latest["orders-value"] = Schema(json.dumps(v2), "JSON")
    second, header = digest_written()
    assert second != first and header == second.encode()

    (tmp_path / "file").mkdir()
    file_only = PipelineDriver(write_pipeline(tmp_path / "file", schema_file=ORDER_SCHEMA))
    assert file_only.settings.pipeline_digest not in (first, second)


def test_format_encoder_writes_protobuf_with_the_text_schema_id(
    registry: StandInRegistry,
) -> None:
    from stream.formats import FormatEncoder

    enc = FormatEncoder("protobuf", URL, ENRICHED_PROTO, client=registry)  # type: ignore[arg-type]
    framed = enc.encode("out", {"order_id": "o1", "enrichment": {"size": 2.0}, "extra": 1})
    assert registry.registered["out-value"] == [ENRICHED_PROTO]
    assert framed[:6] == b"\x00" + (100).to_bytes(4, "big") + b"\x00"
    message = protobuf_message_class(ENRICHED_PROTO, "test").FromString(framed[6:])
    assert (message.order_id, message.enrichment.size) == ("o1", 2.0)
