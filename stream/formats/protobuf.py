"""``protobuf``: schema-less decoding of Confluent-framed Protobuf values.

confluent-kafka's :class:`ProtobufDeserializer` cannot do this: it requires a generated
message class (``message_type``) and parses every payload into that class; the writer
schema it fetches is used only for migration rules. A pipeline file has no generated
classes, so this decoder builds the message class from the *writer* schema itself:

1. the header is read with confluent-kafka's :class:`SchemaId` (magic byte, schema id,
   the zig-zag varint list of message indexes that picks the message inside the file);
2. the writer schema is fetched once per id as a serialized ``FileDescriptorProto``
   (``GET /schemas/ids/<id>?format=serialized``, what Confluent Schema Registry serves,
   base64), its references fetched the same way, and the well-known types
   (``google/protobuf/*.proto``) come from the installed protobuf runtime;
3. the message class comes from a private :class:`DescriptorPool` per schema id, the
   payload is parsed into it and converted with ``json_format.MessageToDict``
   (field names as declared, fields at their default values included — the proto3 JSON
   mapping otherwise, so 64-bit integers are JSON strings and enums their names).

**Limitation (measured with Apicurio Registry 3.3.3)**: Apicurio's ccompat API answers
``?format=serialized`` with the descriptor's bytes decoded as UTF-8 text, so every byte
≥ 0x80 (any length or field number ≥ 128, non-ASCII names, …) arrives as U+FFFD and the
descriptor cannot be recovered. A descriptor that came through intact (all bytes < 0x80,
typical of small schemas) is used; otherwise decoding stops with a
:class:`~stream.errors.ConfigError` naming the schema id — never a flood of rejects, since
every record of that schema would fail alike. With Confluent Schema Registry (base64)
there is no such limit. Parsing ``.proto`` text instead would need ``protoc``
(grpcio-tools) or a .proto → descriptor compiler, which the project does not carry yet.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import time
from collections.abc import Sequence
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError, Message

from stream.errors import ConfigError
from stream.formats.base import (
    BAD_FRAMING,
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    Format,
    framing_problem,
    json_default,
)
from stream.formats.client import RegistryClient, describe, is_not_found, registry_failure
from stream.formats.decoders import UNKNOWN_ID_TTL_S
from stream.stages import Reject


class ProtobufDecoder:
    """A :class:`~stream.formats.base.FormatDecoder` for Confluent-framed Protobuf."""

    format: Format = "protobuf"

    def __init__(self, client: RegistryClient, url: str) -> None:
        self._client = client
        self._url = url
        self._pools: dict[int, tuple[DescriptorPool, descriptor_pb2.FileDescriptorProto]] = {}
        self._classes: dict[tuple[int, tuple[int, ...]], type[Message]] = {}
        self._unknown_ids: dict[int, tuple[float, str]] = {}  # id -> (when, why)

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]:
        from confluent_kafka.schema_registry.common.serde import SchemaId

        out: list[bytes | None] = []
        rejects: list[Reject] = []
        for position, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            problem = framing_problem(value)
            if problem is not None:
                rejects.append(Reject(position, BAD_FRAMING, problem))
                out.append(None)
                continue
            header = SchemaId("PROTOBUF")
            try:
                payload = header.from_bytes(io.BytesIO(value)).read()
            except Exception as exc:
                message = f"bad Protobuf message-index list after the header: {describe(exc)}"
                rejects.append(Reject(position, BAD_FRAMING, message))
                out.append(None)
                continue
            schema_id: int = header.id
            indexes = tuple(header.message_indexes or (0,))
            cls = self._classes.get((schema_id, indexes))
            if cls is None:
                found = self._message_class(schema_id, indexes)
                if isinstance(found, str):
                    rejects.append(Reject(position, UNKNOWN_SCHEMA, found))
                    out.append(None)
                    continue
                cls = found
            message = cls()
            try:
                message.ParseFromString(payload)
                as_dict = json_format.MessageToDict(
                    message,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                out.append(orjson.dumps(as_dict, default=json_default))
            except (DecodeError, ValueError, TypeError, RuntimeError) as exc:
                rejects.append(Reject(position, UNDECODABLE, describe(exc)))
                out.append(None)
        return out, rejects

    def _message_class(self, schema_id: int, indexes: tuple[int, ...]) -> type[Message] | str:
        """The class for message ``indexes`` of schema ``schema_id``, or why it is unknown."""
        known_unknown = self._unknown_ids.get(schema_id)
        if known_unknown is not None and time.monotonic() - known_unknown[0] < UNKNOWN_ID_TTL_S:
            return known_unknown[1]
        loaded = self._pools.get(schema_id)
        if loaded is None:
            try:
                schema = self._client.get_schema(schema_id, fmt="serialized")
            except Exception as exc:
                failure = registry_failure(exc, self._url)
                if failure is not None:
                    raise failure from exc
                reason = f"schema id {schema_id} is not in the registry at {self._url}"
                if not is_not_found(exc):
                    reason = f"schema id {schema_id} could not be read: {describe(exc)}"
                self._unknown_ids[schema_id] = (time.monotonic(), reason)
                return reason
            if getattr(schema, "schema_type", "PROTOBUF") != "PROTOBUF":
                reason = f"schema id {schema_id} is a {schema.schema_type} schema, not Protobuf"
                self._unknown_ids[schema_id] = (time.monotonic(), reason)
                return reason
            pool = _new_pool()
            for reference in schema.references or ():
                self._add_reference(pool, reference, schema_id)
            file_proto = _descriptor_proto(schema.schema_str, f"schema id {schema_id}")
            pool.Add(file_proto)
            loaded = self._pools[schema_id] = (pool, file_proto)
        pool, file_proto = loaded
        try:
            descriptor = _message_descriptor(pool, file_proto, indexes)
        except (IndexError, KeyError) as exc:
            return f"schema id {schema_id} has no message at index path {list(indexes)}: {exc}"
        cls: type[Message] = message_factory.GetMessageClass(descriptor)
        self._classes[(schema_id, indexes)] = cls
        return cls

    def _add_reference(self, pool: DescriptorPool, reference: Any, schema_id: int) -> None:
        try:
            registered = self._client.get_version(
                reference.subject, reference.version, fmt="serialized"
            )
        except Exception as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            raise ConfigError(
                f"schema id {schema_id}",
                f"its reference {reference.name} ({reference.subject} v{reference.version}) "
                f"could not be read: {describe(exc)}",
            ) from exc
        nested = registered.schema
        for inner in nested.references or ():
            self._add_reference(pool, inner, schema_id)
        proto = _descriptor_proto(nested.schema_str, f"reference {reference.name}")
        proto.name = reference.name
        with contextlib.suppress(TypeError):  # already added through another reference
            pool.Add(proto)


def _new_pool() -> DescriptorPool:
    from google.protobuf import (
        any_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )

    pool = DescriptorPool()
    for module in (
        descriptor_pb2,
        any_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    ):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


def _descriptor_proto(schema_str: str, what: str) -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` from a ``format=serialized`` answer: base64 (Confluent),
    or raw bytes as text (Apicurio) when they survived the trip intact."""
    candidates: list[bytes] = []
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(schema_str, validate=True))
    if all(ord(char) < 0x80 for char in schema_str):
        candidates.append(schema_str.encode("ascii"))
    for raw in candidates:
        try:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except DecodeError:
            continue
        if proto.message_type or proto.enum_type:
            return proto
    raise ConfigError(
        what,
        "the registry did not return a usable serialized Protobuf descriptor "
        "(GET /schemas/ids/<id>?format=serialized); Apicurio Registry returns the "
        "descriptor's bytes as UTF-8 text, which loses every byte >= 0x80. Decode this "
        "topic's Protobuf with a Confluent Schema Registry, or produce it as Avro or "
        "JSON Schema",
    )


def _message_descriptor(
    pool: DescriptorPool, file_proto: descriptor_pb2.FileDescriptorProto, indexes: Sequence[int]
) -> Descriptor:
    messages = file_proto.message_type
    path: list[str] = []
    for index in indexes:
        found = messages[index]
        path.append(found.name)
        messages = found.nested_type
    full_name = ".".join(([file_proto.package] if file_proto.package else []) + path)
    descriptor: Descriptor = pool.FindMessageTypeByName(full_name)
    return descriptor
