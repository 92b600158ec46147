"""Decoders for values framed by a schema-registry serializer (Confluent wire format).

Each value is ``0x00``, a big-endian 4-byte schema id, then the payload. The writer
schema is fetched from the registry by that id once and cached by confluent-kafka's
client for the life of the process; decoding is confluent-kafka's own deserializer
(:class:`AvroDeserializer`, :class:`JSONDeserializer`), so whatever it accepts we accept.

* ``avro``: decoded with the writer schema, *read* with the latest version of the
  topic's subject (``<topic>-value``, TopicNameStrategy) — a record written with v1 comes
  out with v2's new fields at their defaults, so downstream sees one shape. When the
  subject does not exist (the producer used another naming strategy) the writer schema
  is the reader too. Avro ``bytes``/``fixed`` become base64 text and ``decimal`` a
  decimal string in the JSON (see :func:`stream.formats.base.json_default`).
* ``json_schema``: the payload is JSON; it is checked against its *writer* schema
  (a violation is :data:`UNDECODABLE`) and passed on as JSON.

Rejects: no header → :data:`BAD_FRAMING`; an id the registry does not know →
:data:`UNKNOWN_SCHEMA` (remembered for :data:`UNKNOWN_ID_TTL_S` s so a burst of them costs
one lookup); anything the deserializer cannot read → :data:`UNDECODABLE`. A registry that
cannot be reached raises :class:`TransientError` for the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
from confluent_kafka.serialization import MessageField, SerializationContext

from stream.formats.base import (
    BAD_FRAMING,
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    Format,
    framing_problem,
    json_default,
    schema_id_of,
)
from stream.formats.client import (
    LATEST_TTL_S,
    RegistryClient,
    describe,
    is_not_found,
    registry_failure,
)
from stream.stages import Reject

UNKNOWN_ID_TTL_S: Final = 10.0

Deserializer = Callable[[bytes, SerializationContext], Any]


def _avro(client: RegistryClient, latest: bool) -> Deserializer:
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    deserializer: Deserializer = AvroDeserializer(client, conf={"use.latest.version": latest})
    return deserializer


def _json_schema(client: RegistryClient, latest: bool) -> Deserializer:
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer

    deserializer: Deserializer = JSONDeserializer(
        None, schema_registry_client=client, conf={"use.latest.version": latest}
    )
    return deserializer


_FACTORIES: Final[dict[str, Callable[[RegistryClient, bool], Deserializer]]] = {
    "avro": _avro,
    "json_schema": _json_schema,
}
#: Formats read with the subject's latest version as reader schema (Avro schema resolution
#: fills defaults); JSON Schema has no resolution, so its records keep their writer shape.
_READ_WITH_LATEST: Final = frozenset({"avro"})


class RegistryDecoder:
    """A :class:`~stream.formats.base.FormatDecoder` for ``avro`` or ``json_schema``."""

    def __init__(self, format: Format, client: RegistryClient, url: str) -> None:
        if format not in _FACTORIES:
            raise ValueError(f"RegistryDecoder does not handle {format!r}")
        self.format: Format = format
        self._client = client
        self._url = url
        self._writer = _FACTORIES[format](client, False)
        self._latest = (
            _FACTORIES[format](client, True) if format in _READ_WITH_LATEST else self._writer
        )
        self._contexts: dict[str, SerializationContext] = {}
        self._writer_only_until: dict[str, float] = {}  # topic -> when to try latest again
        self._unknown_ids: dict[int, tuple[float, str]] = {}

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]:
        ctx = self._contexts.get(topic)
        if ctx is None:
            ctx = self._contexts[topic] = SerializationContext(topic, MessageField.VALUE)
        deserialize = self._deserializer_for(topic)
        dumps = orjson.dumps
        out: list[bytes | None] = []
        rejects: list[Reject] = []
        for position, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            try:
                decoded = deserialize(value, ctx)
            except Exception as exc:
                reject = self._classify(topic, position, value, ctx, exc)
                if isinstance(reject, Reject):
                    rejects.append(reject)
                    out.append(None)
                    continue
                decoded = reject[0]
            try:
                out.append(dumps(decoded, default=json_default))
            except TypeError as exc:
                rejects.append(Reject(position, UNDECODABLE, f"not representable as JSON: {exc}"))
                out.append(None)
        return out, rejects

    def _deserializer_for(self, topic: str) -> Deserializer:
        until = self._writer_only_until.get(topic)
        if until is None:
            return self._latest
        if time.monotonic() < until:
            return self._writer
        del self._writer_only_until[topic]
        return self._latest

    def _classify(
        self, topic: str, position: int, value: bytes, ctx: SerializationContext, exc: Exception
    ) -> Reject | tuple[Any]:
        """A reject for this record, or ``(decoded,)`` if the writer-schema path read it;
        raises when the failure is not the record's (registry down, bad credentials)."""
        problem = framing_problem(value)
        if problem is not None:
            return Reject(position, BAD_FRAMING, problem)
        failure = registry_failure(exc, self._url)
        if failure is not None:
            raise failure from exc
        schema_id = schema_id_of(value)
        known_unknown = self._unknown_ids.get(schema_id)
        now = time.monotonic()
        if known_unknown is not None and now - known_unknown[0] < UNKNOWN_ID_TTL_S:
            return Reject(position, UNKNOWN_SCHEMA, known_unknown[1])
        if not is_not_found(exc):
            return Reject(position, UNDECODABLE, describe(exc))
        if self._latest is not self._writer:
            # The subject (or this schema under it) is missing: read with the writer schema.
            try:
                decoded = self._writer(value, ctx)
            except Exception as retry_exc:
                failure = registry_failure(retry_exc, self._url)
                if failure is not None:
                    raise failure from retry_exc
                if not is_not_found(retry_exc):
                    return Reject(position, UNDECODABLE, describe(retry_exc))
                exc = retry_exc
            else:
                self._writer_only_until[topic] = now + LATEST_TTL_S
                return (decoded,)
        message = f"schema id {schema_id} is not in the registry at {self._url}: {describe(exc)}"
        self._unknown_ids[schema_id] = (now, message)
        return Reject(position, UNKNOWN_SCHEMA, message)
