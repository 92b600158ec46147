"""Output records in a registry format: one writer per format, and the per-topic encoder.

:class:`OutputEncoder` is ``Stages.encoder``: it turns the JSON output values of a batch
into ``output_format`` in the Confluent framing (magic byte, schema id, for Protobuf the
message-index list, payload). Its schemas are checked against the registry at start-up
and registered once; per record it writes the header and the payload itself:

* ``avro``: ``orjson.loads`` + ``fastavro.schemaless_writer``;
* ``protobuf``: the first message of the ``.proto`` file (compiled once with protoc)
  built from the JSON (its constructor, or ``json_format.Parse`` for what only the proto3
  JSON mapping accepts; unknown JSON fields are ignored, as Avro's writer ignores fields
  its schema lacks), then ``SerializeToString``;
* ``json_schema``: the JSON bytes unchanged, after a check against the output schema
  compiled to a msgspec decoder (:mod:`stream.schema`, ~1 µs per record).

**A record its schema refuses is no reason to stop the worker.** Derived values of the
wrong type, a missing required field: :meth:`OutputEncoder.encode_records` returns such
records as :class:`~stream.stages.Reject` (``output_schema_violation``, naming the field
and the reason) beside the encoded rest, and the router dead-letters them (stage
``encode``) while the other records of the batch are written. Built-in schemas
(correlation records) go through :meth:`OutputEncoder.encode_values`, where a refusal is a
bug in this program and raises :class:`~stream.errors.FatalError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, Final

import msgspec
import orjson
from confluent_kafka.schema_registry import Schema
from fastavro import parse_schema, schemaless_writer
from fastavro.validation import ValidationError, validate

from stream.errors import ConfigError, FatalError
from stream.formats.client import RegistryClient, describe, registry_failure
from stream.formats.encoder import SCHEMA_TYPES, FormatEncoder
from stream.stages import Reject

#: ``dlq.error.class`` of an output record its output schema refuses (``dlq.stage`` encode).
OUTPUT_SCHEMA_VIOLATION: Final = "output_schema_violation"

#: Writes one JSON value's payload (without the header); raises on a value that does not fit.
Payload = Callable[[bytes], bytes]


def avro_payload(schema: str) -> Payload:
    """``fastavro`` with the parsed schema; a refusal names the field (fastavro's validator
    is asked only then, so records that fit pay nothing for the explanation)."""
    parsed = parse_schema(json.loads(schema))
    loads = orjson.loads

    def write(value: bytes) -> bytes:
        record = loads(value)
        buffer = BytesIO()
        try:
            schemaless_writer(buffer, parsed, record)
        except Exception as exc:
            raise ValueError(_avro_reason(parsed, record, exc)) from exc
        return buffer.getvalue()

    return write


def _avro_reason(parsed: Any, record: Any, exc: Exception) -> str:
    """``field shop.Order.amount: str 'x', expected double`` — per field, what was there
    and what each schema branch wanted (a union lists them all)."""
    try:
        validate(record, parsed, raise_errors=True)
    except ValidationError as invalid:
        seen: dict[str, dict[str, list[str]]] = {}
        for error in invalid.errors:
            schema = error.schema
            expected = schema if isinstance(schema, str) else _avro_kind(schema)
            datum = error.datum
            got = "missing" if datum is None else f"{type(datum).__name__} {datum!r:.60}"
            seen.setdefault(str(error.field), {}).setdefault(got, []).append(expected)
        return "; ".join(
            f"field {field}: "
            + " / ".join(f"{got}, expected {' or '.join(wanted)}" for got, wanted in gots.items())
            for field, gots in seen.items()
        )
    except Exception:  # the validator itself could not say; the writer's words will do
        pass
    return f"{type(exc).__name__}: {exc}"


def _avro_kind(schema: Any) -> str:
    if isinstance(schema, dict):
        kind = schema.get("type")
        name = schema.get("name")
        return f"{kind} {name}" if isinstance(name, str) else str(kind)
    return "a union" if isinstance(schema, list) else str(schema)


def protobuf_payload(schema: str, label: str) -> Payload:
    """The ``.proto`` text compiled once; each JSON value made into its first message.

    Fast path: the message constructor over the top-level fields the message has (~4 µs
    with the upb runtime). Whatever it refuses — a value of the wrong type, but also what
    only the proto3 JSON mapping accepts (64-bit integers as strings, enum names,
    well-known types, unknown nested fields) — goes through ``json_format.Parse``
    (~25 µs), which either accepts it or names the field that does not fit.
    """
    from google.protobuf import json_format

    cls = protobuf_message_class(schema, label)
    fields = frozenset(f.name for f in cls.DESCRIPTOR.fields)
    parse = json_format.Parse
    loads = orjson.loads

    def write(value: bytes) -> bytes:
        record = loads(value)
        try:
            message = cls(**{k: v for k, v in record.items() if k in fields})
        except Exception:
            try:
                message = parse(value, cls(), ignore_unknown_fields=True)
            except json_format.ParseError as exc:
                raise ValueError(str(exc)) from exc
        out: bytes = message.SerializeToString()
        return out

    return write


def protobuf_message_class(schema: str, label: str) -> Any:
    """The class of the first message of ``.proto`` text ``schema`` (message index 0, the
    index the wire header names)."""
    from google.protobuf import message_factory

    from stream.formats.protobuf import _compile, _new_pool

    pool = _new_pool()
    main = _compile({"output.proto": schema}, "output.proto", pool, label)
    if not main.message_type:
        raise ConfigError(label, "the .proto file declares no message")
    name = main.message_type[0].name
    full = f"{main.package}.{name}" if main.package else name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))


def json_schema_check(schema: str, label: str) -> Payload:
    """The JSON bytes as they are, once the output schema (compiled) accepts them."""
    from stream.schema import compile_json_schema

    # A keyword the compiler cannot check is refused at start-up (a SchemaError naming
    # the place), never ignored: the output would otherwise go unchecked for it.
    decode = compile_json_schema(json.loads(schema), source=label).decoder.decode

    def write(value: bytes) -> bytes:
        try:
            decode(value)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        return value

    return write


class OutputEncoder:
    """``Stages.encoder``: JSON output values → ``output_format`` in the Confluent framing.

    :meth:`check_compatible` (start-up, registers nothing) and :meth:`register` (once, before
    the first record) talk to the registry; encoding does not, once registered.
    """

    def __init__(
        self,
        format: str,
        url: str,
        client: RegistryClient,
        schemas: Mapping[str, str],
        strategy: str,
    ) -> None:
        self.format = format
        self._url = url
        self._client = client
        self._encoders = {
            topic: FormatEncoder(
                format,  # type: ignore[arg-type]
                url,
                schema,
                subject_strategy=strategy,  # type: ignore[arg-type]
                client=client,
            )
            for topic, schema in schemas.items()
        }
        self._payloads: dict[str, Payload] = {
            topic: self._payload(topic, schema) for topic, schema in schemas.items()
        }
        self._headers: dict[str, bytes] = {}

    def _payload(self, topic: str, schema: str) -> Payload:
        label = f"output schema for {topic}"
        if self.format == "avro":
            return avro_payload(schema)
        if self.format == "protobuf":
            return protobuf_payload(schema, label)
        return json_schema_check(schema, label)

    def subjects(self) -> dict[str, str]:
        return {topic: encoder.subject(topic) for topic, encoder in self._encoders.items()}

    def check_compatible(self) -> None:
        """ConfigError with the registry's message if an output schema is incompatible."""
        for topic, encoder in self._encoders.items():
            encoder.check_compatible(topic)

    def register(self) -> None:
        """Register every output schema (idempotent: an existing version keeps its id)."""
        for topic in self._encoders:
            self._header(topic)

    def _header(self, topic: str) -> bytes:
        header = self._headers.get(topic)
        if header is not None:
            return header
        encoder = self._encoders[topic]
        subject = encoder.subject(topic)
        try:
            schema_id = self._client.register_schema(
                subject, Schema(encoder.schema, SCHEMA_TYPES[self.format])
            )
        except Exception as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            raise ConfigError(
                f"output schema for subject {subject!r}",
                f"the registry refused it: {describe(exc)}",
            ) from exc
        header = b"\x00" + int(schema_id).to_bytes(4, "big")
        if self.format == "protobuf":
            header += b"\x00"  # the message-index list [0]: the file's first message
        self._headers[topic] = header
        return header

    def encode_records(self, topic: str, values: list[bytes]) -> tuple[list[bytes], list[Reject]]:
        """The values that fit ``topic``'s schema, encoded (in order), and a
        :data:`OUTPUT_SCHEMA_VIOLATION` reject (position in ``values``) for each other."""
        header = self._headers.get(topic) or self._header(topic)
        write = self._payloads[topic]
        out: list[bytes] = []
        rejects: list[Reject] = []
        for position, value in enumerate(values):
            try:
                out.append(header + write(value))
            except Exception as exc:
                subject = self._encoders[topic].subject(topic)
                why = f"does not fit the {self.format} output schema (subject {subject}): {exc}"
                rejects.append(Reject(position, OUTPUT_SCHEMA_VIOLATION, why))
        return out, rejects

    def encode_values(self, topic: str, values: list[bytes]) -> list[bytes]:
        """All of ``values`` encoded; :class:`FatalError` if one does not fit (built-in
        schemas: a refusal is a bug, not a bad record)."""
        out, rejects = self.encode_records(topic, values)
        if rejects:
            first = rejects[0]
            record = values[first.position][:300]
            raise FatalError(f"an output record for {topic} {first.message}; record: {record!r}")
        return out
