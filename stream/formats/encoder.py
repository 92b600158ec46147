"""Encoding output records for a schema registry, and the start-up compatibility check.

:class:`FormatEncoder` wraps confluent-kafka's :class:`AvroSerializer` /
:class:`JSONSerializer` (Protobuf: a serializer of its own over the ``.proto`` text, see
``_protobuf_serializer``): the first ``encode`` for a topic registers the output schema
under ``<topic>-value`` (TopicNameStrategy; ``subject_strategy="record"`` uses the
record's full name instead) and every later one reuses the cached id. The worker's own
per-batch encoding is :class:`stream.formats.output.OutputEncoder`.

:meth:`FormatEncoder.check_compatible` is meant for start-up: it asks the registry
whether the output schema may be registered under the topic's subject and raises
:class:`~stream.errors.ConfigError` carrying the registry's own explanation if not, so a
worker refuses to start instead of failing on its first output record. A registry's
compatibility endpoint answers only ``is_compatible: false`` (Apicurio gives no reasons,
even with ``verbose=true``), so for the reason the check then attempts the registration,
which a registry refuses for an incompatible schema — with its message (HTTP 409) and
without storing anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, Literal

from confluent_kafka.schema_registry import (
    Schema,
    record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from stream.errors import ConfigError
from stream.formats.base import Format
from stream.formats.client import (
    RegistryClient,
    describe,
    is_not_found,
    make_client,
    registry_failure,
)

SubjectStrategy = Literal["topic", "record"]
#: The registry's ``schemaType`` of each output format.
SCHEMA_TYPES: Final[dict[str, str]] = {
    "avro": "AVRO",
    "json_schema": "JSON",
    "protobuf": "PROTOBUF",
}
_STRATEGIES: Final[dict[str, Callable[..., Any]]] = {
    "topic": topic_subject_name_strategy,
    "record": record_subject_name_strategy,
}


class FormatEncoder:
    """Encodes dicts as ``format`` with ``schema`` (Avro schema JSON or JSON Schema text)."""

    def __init__(
        self,
        format: Format,
        registry_url: str,
        schema: str,
        basic_auth: str | None = None,
        *,
        subject_strategy: SubjectStrategy = "topic",
        client: RegistryClient | None = None,
    ) -> None:
        if format not in SCHEMA_TYPES:
            raise ConfigError(
                "output.format",
                f"{format!r} cannot be encoded here: use one of {sorted(SCHEMA_TYPES)}",
            )
        self.format: Format = format
        self.schema = schema
        self._url = registry_url
        self._client = client if client is not None else make_client(registry_url, basic_auth)
        self._strategy = subject_strategy
        self._contexts: dict[str, SerializationContext] = {}
        conf = {"subject.name.strategy": _STRATEGIES[subject_strategy]}
        self._serializer: Callable[[Any, SerializationContext], bytes]
        try:
            if format == "avro":
                from confluent_kafka.schema_registry.avro import AvroSerializer

                self._serializer = AvroSerializer(self._client, schema, conf=conf)
            elif format == "protobuf":
                self._serializer = self._protobuf_serializer(schema)
            else:
                from confluent_kafka.schema_registry.json_schema import JSONSerializer

                self._serializer = JSONSerializer(schema, self._client, conf=conf)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError("output.schema", f"not a valid {format} schema: {exc}") from exc

    def _protobuf_serializer(self, schema: str) -> Callable[[Any, SerializationContext], bytes]:
        """A dict in the file's first message, framed with the id of the ``.proto`` *text*.

        confluent-kafka's ProtobufSerializer registers the serialized descriptor, which
        Apicurio mangles (:mod:`stream.formats.protobuf`); the text is what every registry
        keeps intact, so this registers the text and writes the frame itself.
        """
        from google.protobuf import json_format

        from stream.formats.output import protobuf_message_class

        cls = protobuf_message_class(schema, "output.schema")
        ids: dict[str, int] = {}

        def serialize(obj: Any, ctx: SerializationContext) -> bytes:
            subject = self.subject(ctx.topic)
            if subject not in ids:
                ids[subject] = self._client.register_schema(subject, Schema(schema, "PROTOBUF"))
            message = json_format.ParseDict(obj, cls(), ignore_unknown_fields=True)
            header = b"\x00" + ids[subject].to_bytes(4, "big") + b"\x00"
            return header + message.SerializeToString()

        return serialize

    def subject(self, topic: str) -> str:
        if self._strategy == "topic":
            return f"{topic}-value"
        name = _record_name(self.schema) if self.format == "avro" else None
        if name is None:
            raise ConfigError("output.subject_strategy", "'record' needs a named Avro record")
        return name

    def encode(self, topic: str, obj: dict[str, Any]) -> bytes:
        """``obj`` in the wire format (magic byte, schema id, payload).

        Raises :class:`TransientError` if the schema must be registered and the registry
        is unreachable, :class:`ConfigError` if the registry refuses it, ``ValueError`` if
        ``obj`` does not fit the schema.
        """
        ctx = self._contexts.get(topic)
        if ctx is None:
            ctx = self._contexts[topic] = SerializationContext(topic, MessageField.VALUE)
        try:
            return self._serializer(obj, ctx)
        except SchemaRegistryError as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            raise ConfigError(f"output schema for {self.subject(topic)}", describe(exc)) from exc
        except Exception as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            raise ValueError(f"record does not fit the {self.format} output schema: {exc}") from exc

    def check_compatible(self, topic: str, schema: str | None = None) -> None:
        """Raise :class:`ConfigError` with the registry's message if ``schema`` (default:
        this encoder's) is not compatible with the subject's registered versions."""
        subject = self.subject(topic)
        candidate = Schema(schema if schema is not None else self.schema, SCHEMA_TYPES[self.format])
        field = f"output schema for subject {subject!r}"
        try:
            if self._client.test_compatibility(subject, candidate):
                return
            # Incompatible: registration is refused with the registry's reason (nothing stored).
            self._client.register_schema(subject, candidate)
        except Exception as exc:
            failure = registry_failure(exc, self._url)
            if failure is not None:
                raise failure from exc
            if is_not_found(exc):
                return  # no subject / no version yet: anything is compatible with nothing
            raise ConfigError(field, f"the registry refused it: {describe(exc)}") from exc
        # The registry accepted it after all (a version was added or removed concurrently).


def _record_name(schema: str) -> str | None:
    try:
        parsed = json.loads(schema)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    namespace = parsed.get("namespace")
    name: str = parsed["name"]
    return f"{namespace}.{name}" if isinstance(namespace, str) and "." not in name else name
