"""stream.formats without a registry: framing, the JSON identity, JSON forms of Avro
types, failure classification and configuration errors. (Decoding against a real
registry: tests/integration/test_registry.py.)"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from stream.config import Settings, load_settings
from stream.errors import ConfigError, TransientError
from stream.formats import FORMATS, FormatEncoder, JsonDecoder, make_decoder
from stream.formats.base import framing_problem, json_default, schema_id_of
from stream.formats.client import is_not_found, registry_failure
from stream.formats.pipeline import (
    GuardedDecoder,
    avro_to_json_schema,
    build_decoder,
    build_encoder,
    registry_subject,
    registry_url,
)
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.schema import compile_json_schema

URL = "http://registry.invalid:8081"


def test_json_is_the_identity() -> None:
    values: list[bytes | None] = [b'{"a":1}', None, b"not even json"]
    decoder = make_decoder("json", None)
    assert isinstance(decoder, JsonDecoder)
    out, rejects = decoder.decode_batch("t", values)
    assert out == values and rejects == []
    assert out[0] is values[0]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"", "0 bytes is too short"),
        (b"\x00\x00\x00\x00\x01", "5 bytes is too short"),
        (b'{"json": true}', "byte 0x7b, not the schema-registry magic byte"),
        (b"\x01" + bytes(20), "byte 0x01"),
    ],
)
def test_framing_problems_are_named(value: bytes, problem: str) -> None:
    reason = framing_problem(value)
    assert reason is not None and problem in reason


def test_a_framed_value_has_no_problem_and_its_id_is_big_endian() -> None:
    value = b"\x00\x00\x01\x00\x02payload"
    assert framing_problem(value) is None
    assert schema_id_of(value) == 65538


def test_avro_values_json_has_no_form_for_get_one() -> None:
    record = {
        "raw": b"\x00\xff",
        "price": decimal.Decimal("12.340"),
        "when": datetime.datetime(2026, 12, 2, 15, 0, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 12, 2),
        "id": uuid.UUID(int=1),
    }
    assert orjson.loads(orjson.dumps(record, default=json_default)) == {
        "raw": "AP8=",
        "price": "12.340",
        "when": "2026-12-02T15:00:00+00:00",
        "day": "2026-12-02",
        "id": "00000000-0000-0000-0000-000000000001",
    }
    with pytest.raises(TypeError):
        json_default(object())


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        SchemaRegistryError(503, 50301, "unavailable"),
        SchemaRegistryError(429, 42901, "slow down"),
    ],
)
def test_unreachable_or_overloaded_registry_is_transient(exc: Exception) -> None:
    assert isinstance(registry_failure(exc, URL), TransientError)


def test_refused_credentials_are_a_config_error_not_a_reject() -> None:
    failure = registry_failure(SchemaRegistryError(401, 40101, "Unauthorized"), URL)
    assert isinstance(failure, ConfigError) and "Unauthorized" in str(failure)


def test_record_problems_are_left_to_the_decoder() -> None:
    missing = SchemaRegistryError(404, 40403, "Schema 7 not found.")
    assert registry_failure(missing, URL) is None
    assert is_not_found(missing) and is_not_found(missing, 40403)
    assert not is_not_found(missing, 40401)
    assert registry_failure(EOFError("short"), URL) is None


def test_registry_formats_need_a_url() -> None:
    for format in FORMATS:
        if format != "json":
            with pytest.raises(ConfigError, match="STREAM_SCHEMA_REGISTRY_URL"):
                make_decoder(format, None)


def test_unknown_format_and_bad_credentials_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown format"):
        make_decoder("xml", URL)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="USER:PASSWORD"):
        make_decoder("avro", URL, basic_auth="no-colon")


def test_a_proto_file_without_a_message_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="declares no message"):
        FormatEncoder("protobuf", URL, "syntax = 'proto3';")


def test_a_bad_output_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid avro schema"):
        FormatEncoder("avro", URL, '{"type": "record", "name": "X", "fields": "nope"}')


# --- the pipeline file's format keys (stream.formats.pipeline) ----------------------------


def _settings(tmp_path: Path, **keys: object) -> Settings:
    spec = {
        "pipeline": "p",
        "topics": {"input": "in", "enriched": "out", "correlations": "c", "dlq": "d"},
        "event_time": {"field": "t"},
        "schema": {"t": {"type": "integer", "required": True}},
        **keys,
    }
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(spec))
    return load_settings(path)


def test_avro_translates_to_the_json_schema_of_the_decoded_records() -> None:
    avro = {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "tag", "type": ["null", "string"], "default": None},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "again", "type": ["null", "Kind"]},
            {"name": "n", "type": ["int", "long"]},
            {"name": "m", "type": {"type": "map", "values": "double"}},
        ],
    }
    doc = avro_to_json_schema(avro)
    assert doc["properties"] == {
        "id": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "tag": {"type": ["string", "null"]},
        "kind": {"enum": ["A", "B"]},
        "again": {"enum": ["A", "B", None]},
        "n": {"type": "integer"},
        "m": {"type": "object", "additionalProperties": {"type": "number"}},
    }
    assert doc["required"] == ["id", "at", "kind", "again", "n", "m"]  # tag has a default
    compile_json_schema(doc, source="t")  # the compiler takes every part of it


@pytest.mark.parametrize(
    ("avro", "reason"),
    [
        (
            {"type": "record", "name": "R", "fields": [{"name": "next", "type": ["null", "R"]}]},
            "recursive",
        ),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [
                    {
                        "name": "u",
                        "type": [
                            {"type": "array", "items": "int"},
                            {"type": "map", "values": "int"},
                        ],
                    }
                ],
            },
            "a union of",
        ),
        ("string", "top level must be a record"),
    ],
)
def test_what_cannot_be_translated_is_refused(avro: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        avro_to_json_schema(avro)


def test_format_keys_load_and_name_the_missing_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAM_SCHEMA_REGISTRY_URL", raising=False)
    plain = _settings(tmp_path)
    assert plain.format == "json" and plain.output_format == "json"
    assert build_decoder(plain) is None and build_encoder(plain) is None
    avro = _settings(tmp_path, format="avro")
    with pytest.raises(ConfigError, match="format: avro needs a schema registry"):
        build_decoder(avro)
    with pytest.raises(ConfigError, match="format"):
        _settings(tmp_path, format="xml")
    configured = _settings(
        tmp_path, format="avro", schema_registry={"url": "http://a/apis/ccompat/v7"}
    )
    assert registry_url(configured) == "http://a/apis/ccompat/v7"
    monkeypatch.setenv("STREAM_SCHEMA_REGISTRY_URL", "http://b")
    assert registry_url(_settings(tmp_path, schema_registry={"url": "http://a"})) == "http://b"
    decoder = build_decoder(configured)
    assert decoder is not None and decoder.format == "avro"
    subject = _settings(tmp_path, schema={"registry_subject": "orders-value"})
    assert registry_subject(subject) == "orders-value"
    assert registry_subject(plain) is None


def test_output_avro_needs_its_schema_and_auth_needs_its_variable(tmp_path: Path) -> None:
    url = {"url": "http://registry.invalid:8081"}
    with pytest.raises(ConfigError, match=r"output_schema_file.*Avro schema \(\.avsc\)"):
        build_encoder(_settings(tmp_path, output_format="avro", schema_registry=url))
    auth = {**url, "basic_auth_env": "NO_SUCH_VARIABLE_SET"}
    with pytest.raises(ConfigError, match="NO_SUCH_VARIABLE_SET is not set"):
        build_decoder(_settings(tmp_path, format="avro", schema_registry=auth))


def test_guarded_decoder_counts_transient_failures_on_its_breaker() -> None:
    class Down:
        format = "avro"

        def decode_batch(self, topic: str, values: object) -> object:
            raise TransientError("registry down")

    breaker = CircuitBreaker("test-registry", failure_threshold=2, recovery_timeout=60)
    guarded = GuardedDecoder(Down(), breaker, URL)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(TransientError, match="registry down"):
            guarded.decode_batch("t", [b"x"])
    with pytest.raises(TransientError, match="circuit breaker 'schema-registry' is open"):
        guarded.decode_batch("t", [b"x"])
