"""``protobuf``: schema-less decoding of Confluent-framed Protobuf values.

confluent-kafka's :class:`ProtobufDeserializer` cannot do this: it requires a generated
message class (``message_type``) and parses every payload into that class; the writer
schema it fetches is used only for migration rules. A pipeline file has no generated
classes, so this decoder builds the message class from the *writer* schema itself:

1. the header is read with confluent-kafka's :class:`SchemaId` (magic byte, schema id,
   the zig-zag varint list of message indexes that picks the message inside the file);
2. the writer schema is fetched once per id as a serialized ``FileDescriptorProto``
   (``GET /schemas/ids/<id>?format=serialized``; Confluent Schema Registry answers in
   base64), its references the same way; the well-known types (``google/protobuf/*``)
   come from the installed protobuf runtime;
3. **Apicurio Registry** (3.3.3, measured) answers ``format=serialized`` with the
   descriptor's bytes decoded as UTF-8 text: every byte >= 0x80 (any length or field
   number >= 128 — all but the smallest schemas) arrives as U+FFFD and cannot be
   recovered. Then the ``.proto`` *text* is fetched instead (with its references) and
   compiled with protoc from ``grpcio-tools`` (the ``protobuf`` extra), in-process, once
   per schema id. Without grpcio-tools that case is a :class:`~stream.errors.ConfigError`
   naming the schema id and the extra — never a flood of rejects, since every record of
   that schema would fail alike;
4. the message class comes from a private :class:`DescriptorPool` per schema id, the
   payload is parsed into it and converted with ``json_format.MessageToDict``: field
   names as declared, fields at their default values included, otherwise the proto3 JSON
   mapping (64-bit integers are JSON strings, enums their names, bytes base64).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
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
from stream.formats.client import (
    RegistryClient,
    describe,
    is_not_found,
    make_client,
    registry_failure,
)
from stream.formats.decoders import UNKNOWN_ID_TTL_S
from stream.stages import Reject


class ProtobufDecoder:
    """A :class:`~stream.formats.base.FormatDecoder` for Confluent-framed Protobuf."""

    format: Format = "protobuf"

    def __init__(self, client: RegistryClient, url: str, basic_auth: str | None = None) -> None:
        self._client = client
        self._url = url
        self._basic_auth = basic_auth
        self._text: RegistryClient | None = None
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
            schema_id = header.id or 0
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
            found = self._load(schema_id)
            if isinstance(found, str):
                self._unknown_ids[schema_id] = (time.monotonic(), found)
                return found
            loaded = self._pools[schema_id] = found
        pool, file_proto = loaded
        try:
            descriptor = _message_descriptor(pool, file_proto, indexes)
        except (IndexError, KeyError) as exc:
            return f"schema id {schema_id} has no message at index path {list(indexes)}: {exc}"
        cls: type[Message] = message_factory.GetMessageClass(descriptor)
        self._classes[(schema_id, indexes)] = cls
        return cls

    def _load(
        self, schema_id: int
    ) -> tuple[DescriptorPool, descriptor_pb2.FileDescriptorProto] | str:
        """Schema ``schema_id``'s file in a pool of its own, or why it is unknown."""
        schema = self._fetch(
            lambda: self._client.get_schema(schema_id, fmt="serialized"), schema_id
        )
        if isinstance(schema, str):
            return schema
        if getattr(schema, "schema_type", "PROTOBUF") != "PROTOBUF":
            return f"schema id {schema_id} is a {schema.schema_type} schema, not Protobuf"
        try:
            pool = _new_pool()
            for reference in schema.references or ():
                self._add_serialized_reference(pool, reference, schema_id)
            file_proto = _serialized_descriptor(schema.schema_str)
            pool.Add(file_proto)
            return pool, file_proto
        except _Unusable:
            pass  # Apicurio: compile the .proto text instead
        text = self._fetch(lambda: self._text_client().get_schema(schema_id), schema_id)
        if isinstance(text, str):
            return text
        files = {f"schema_{schema_id}.proto": text.schema_str}
        for reference in text.references or ():
            self._collect_text_reference(files, reference, schema_id)
        pool = _new_pool()
        main = _compile(files, f"schema_{schema_id}.proto", pool, f"schema id {schema_id}")
        return pool, main

    def _fetch(self, call: Any, schema_id: int) -> Any:
        try:
            return call()
        except Exception as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            if is_not_found(exc):
                return f"schema id {schema_id} is not in the registry at {self._url}"
            return f"schema id {schema_id} could not be read: {describe(exc)}"

    def _text_client(self) -> RegistryClient:
        """A second client: confluent-kafka caches schemas by id whatever the format asked."""
        if self._text is None:
            self._text = make_client(self._url, self._basic_auth)
        return self._text

    def _reference(
        self, client: RegistryClient, reference: Any, schema_id: int, fmt: str | None
    ) -> Any:
        try:
            return client.get_version(reference.subject, reference.version, fmt=fmt).schema
        except Exception as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            raise ConfigError(
                f"schema id {schema_id}",
                f"its reference {reference.name} ({reference.subject} v{reference.version}) "
                f"could not be read: {describe(exc)}",
            ) from exc

    def _add_serialized_reference(
        self, pool: DescriptorPool, reference: Any, schema_id: int
    ) -> None:
        nested = self._reference(self._client, reference, schema_id, "serialized")
        for inner in nested.references or ():
            self._add_serialized_reference(pool, inner, schema_id)
        proto = _serialized_descriptor(nested.schema_str)
        proto.name = reference.name
        with contextlib.suppress(TypeError):  # already added through another reference
            pool.Add(proto)

    def _collect_text_reference(
        self, files: dict[str, str], reference: Any, schema_id: int
    ) -> None:
        if reference.name in files:
            return
        nested = self._reference(self._text_client(), reference, schema_id, None)
        files[reference.name] = nested.schema_str
        for inner in nested.references or ():
            self._collect_text_reference(files, inner, schema_id)


class _Unusable(Exception):
    """The registry's serialized descriptor cannot be recovered."""


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


def _serialized_descriptor(schema_str: str) -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` of a ``format=serialized`` answer: base64 (Confluent), or
    raw bytes as text when they came through intact (Apicurio, small schemas)."""
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
    raise _Unusable


def _compile(
    files: dict[str, str], main: str, pool: DescriptorPool, label: str
) -> descriptor_pb2.FileDescriptorProto:
    """Compile ``.proto`` texts (name -> text) with protoc (grpcio-tools), add them to
    ``pool`` and return ``main``'s descriptor. ``label`` names the schema in errors."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise ConfigError(
            label,
            "Protobuf schemas are compiled from their .proto text (Apicurio Registry mangles "
            "the serialized form), which needs protoc from grpcio-tools: "
            "pip install 'stream-processor[protobuf]'",
        ) from exc
    from importlib import resources

    includes = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="stream-proto-") as directory:
        root = Path(directory)
        for name, text in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        output = root / "descriptor-set.pb"
        code = protoc.main(
            [
                "protoc",
                f"-I{root}",
                f"-I{includes}",
                f"--descriptor_set_out={output}",
                "--include_imports",
                main,
            ]
        )
        if code != 0 or not output.is_file():
            raise ConfigError(
                label,
                f"protoc could not compile its .proto text (exit code {code}; its message is "
                "on standard error)",
            )
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())
    found: descriptor_pb2.FileDescriptorProto | None = None
    for file_proto in descriptor_set.file:
        try:
            pool.FindFileByName(file_proto.name)
        except KeyError:
            pool.Add(file_proto)
        if file_proto.name == main:
            found = file_proto
    if found is None:
        raise ConfigError(label, "protoc produced no descriptor for it")
    return found


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
