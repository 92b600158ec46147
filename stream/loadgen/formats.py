"""``stream loadgen --format avro|protobuf|json_schema``: the generated events, framed.

The generator makes JSON bytes (the bundled pipeline's events); for another format each
producer process registers the format's schema for the events under ``<topic>-value``
(idempotent: every process gets the same id) and turns each value into the Confluent wire
format — magic byte, schema id (Protobuf: the message index ``0``), payload:

* ``avro``: :data:`EVENT_AVRO`, written with ``fastavro.schemaless_writer`` (~5 µs/record);
  ``timestamp`` is the union ``[long, string]`` (epoch ms or RFC 3339, as generated);
* ``protobuf``: :data:`EVENT_PROTO`, the message built with ``json_format.ParseDict``;
  proto3 has no union, so an epoch-ms ``timestamp`` is sent as its RFC 3339 text and
  attribute values as strings;
* ``json_schema``: the bundled pipeline's JSON Schema; the payload is the generated JSON.

Invalid records (``--invalid-ratio``) that the format cannot express (a bad enum, a
missing field, text that is not JSON) are sent as they are, unframed: the worker
dead-letters them as ``bad_framing``. The others are framed like valid ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any, Final

import orjson

from stream.errors import ConfigError

LOADGEN_FORMATS: Final = ("json", "avro", "protobuf", "json_schema")

EVENT_AVRO: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Event",
    "namespace": "stream.loadgen",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "timestamp", "type": ["long", "string"]},
        {"name": "type", "type": "string"},
        {"name": "source", "type": "string"},
        {
            "name": "severity",
            "type": {
                "type": "enum",
                "name": "Severity",
                "symbols": ["debug", "info", "warning", "error", "critical"],
            },
        },
        {"name": "entity", "type": ["null", "string"], "default": None},
        {"name": "value", "type": ["null", "double"], "default": None},
        {"name": "trace_id", "type": ["null", "string"], "default": None},
        {
            "name": "attributes",
            "type": ["null", {"type": "map", "values": ["string", "double", "boolean"]}],
            "default": None,
        },
        {"name": "pad", "type": ["null", "string"], "default": None},
    ],
}
EVENT_PROTO: Final = """syntax = "proto3";
package stream.loadgen;

message Event {
  string event_id = 1;
  string timestamp = 2;
  string type = 3;
  string source = 4;
  string severity = 5;
  optional string entity = 6;
  optional double value = 7;
  optional string trace_id = 8;
  map<string, string> attributes = 9;
  optional string pad = 10;
}
"""


def _event_json_schema() -> str:
    from stream.pipelines import DEFAULT_PIPELINE

    return (DEFAULT_PIPELINE.parent / "observability.schema.json").read_text(encoding="utf-8")


class Framer:
    """Frames generated JSON values in ``format`` for ``topic`` (one per producer process)."""

    def __init__(self, format: str, registry_url: str | None, topic: str) -> None:
        if format not in LOADGEN_FORMATS:
            raise ConfigError("format", f"unknown format {format!r}; use one of {LOADGEN_FORMATS}")
        self.format = format
        self._encode: Callable[[bytes], bytes] | None = None
        if format == "json":
            return
        if not registry_url:
            raise ConfigError(
                "registry_url",
                f"--format {format} needs a schema registry: --registry-url or "
                "STREAM_SCHEMA_REGISTRY_URL (`stream registry start` runs one)",
            )
        from confluent_kafka.schema_registry import Schema

        from stream.formats.client import describe, make_client, registry_failure

        client = make_client(registry_url)
        subject = f"{topic}-value"
        text, kind = {
            "avro": (json.dumps(EVENT_AVRO), "AVRO"),
            "protobuf": (EVENT_PROTO, "PROTOBUF"),
            "json_schema": (_event_json_schema(), "JSON"),
        }[format]
        try:
            self.schema_id = int(client.register_schema(subject, Schema(text, kind)))
        except Exception as exc:
            failure = registry_failure(exc, registry_url)
            if failure is not None:
                raise failure from exc
            raise ConfigError(
                "format", f"the registry refused the {format} schema for {subject}: {describe(exc)}"
            ) from exc
        header = b"\x00" + self.schema_id.to_bytes(4, "big")
        if format == "avro":
            self._encode = _avro_encoder(header)
        elif format == "protobuf":
            self._encode = _protobuf_encoder(header + b"\x00")
        else:
            self._encode = header.__add__

    def frame(self, values: list[bytes]) -> list[bytes]:
        """``values`` in the format; a value it cannot express stays as it is (unframed)."""
        encode = self._encode
        if encode is None:
            return values
        out: list[bytes] = []
        for value in values:
            try:
                out.append(encode(value))
            except Exception:
                out.append(value)
        return out


def _avro_encoder(header: bytes) -> Callable[[bytes], bytes]:
    from fastavro import parse_schema, schemaless_writer

    parsed = parse_schema(EVENT_AVRO)
    loads = orjson.loads

    def encode(value: bytes) -> bytes:
        buffer = BytesIO()
        buffer.write(header)
        schemaless_writer(buffer, parsed, loads(value))
        return buffer.getvalue()

    return encode


def _protobuf_encoder(header: bytes) -> Callable[[bytes], bytes]:
    from google.protobuf import json_format, message_factory

    from stream.formats.protobuf import _compile, _new_pool

    pool = _new_pool()
    _compile({"loadgen_event.proto": EVENT_PROTO}, "loadgen_event.proto", pool, "loadgen schema")
    event_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("stream.loadgen.Event")
    )
    loads = orjson.loads

    def encode(value: bytes) -> bytes:
        record = loads(value)
        if not isinstance(record, dict):
            raise TypeError("not an object")
        timestamp = record.get("timestamp")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            seconds, millis = divmod(timestamp, 1000)
            record["timestamp"] = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
            )
        attributes = record.get("attributes")
        if isinstance(attributes, dict):
            record["attributes"] = {k: str(v) for k, v in attributes.items()}
        message = json_format.ParseDict(record, event_class())
        payload: bytes = message.SerializeToString()
        return header + payload

    return encode
