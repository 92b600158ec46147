"""stream.formats without a registry: framing, the JSON identity, JSON forms of Avro
types, failure classification and configuration errors. (Decoding against a real
registry: tests/integration/test_registry.py.)"""

from __future__ import annotations

import datetime
import decimal
import uuid

import httpx
import orjson
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from stream.errors import ConfigError, TransientError
from stream.formats import FORMATS, FormatEncoder, JsonDecoder, make_decoder
from stream.formats.base import framing_problem, json_default, schema_id_of
from stream.formats.client import is_not_found, registry_failure

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


def test_protobuf_output_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="generated message class"):
        FormatEncoder("protobuf", URL, "syntax = 'proto3';")


def test_a_bad_output_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid avro schema"):
        FormatEncoder("avro", URL, '{"type": "record", "name": "X", "fields": "nope"}')
