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
  (a violation is :data:`UNDECODABLE`) and passed on as JSON. That check is
  ``jsonschema``'s and costs ~55 µs per record; with ``validate_writer_schema=False``
  the payload after the header is passed on untouched once its schema id is known to be
  a registered JSON Schema (~0.3 µs) and the pipeline's own validation is the only one
  — malformed JSON is then rejected there, not here.

**Avro's direct path.** confluent-kafka's deserializer costs ~15 µs per record over
fastavro's own ~3.5 µs (it recomputes inline tags, looks up migrations and runs the rule
engine for every record; measured with ``benchmarks/micro_formats.py``), far over the
~6 µs per event the whole pipeline may spend. So for a writer schema and reader schema
that have no references and no data-contract rules — what fastavro alone reads exactly —
the decoder calls ``fastavro.schemaless_reader`` directly with the parsed writer and the
subject's latest version as reader (plans cached per writer id and reader version);
everything else (references, rule sets, a missing subject, every failure) goes through
confluent-kafka's deserializer, which also classifies the failure. A test checks both
paths give the same records.

Rejects: no header → :data:`BAD_FRAMING`; an id the registry does not know →
:data:`UNKNOWN_SCHEMA` (remembered for :data:`UNKNOWN_ID_TTL_S` s so a burst of them costs
one lookup); anything the deserializer cannot read → :data:`UNDECODABLE`. A registry that
cannot be reached raises :class:`TransientError` for the whole batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any, Final

import orjson
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader

from stream.formats.base import (
    BAD_FRAMING,
    HEADER_SIZE,
    MAGIC_BYTE,
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

#: How one writer schema id is read: (parsed writer, parsed reader or None for the writer).
_Plan = tuple[Any, Any]
#: A topic's plans for one reader: (reader schema id or -1 for writer-only, plans, reader).
_Plans = tuple[int, dict[int, "_Plan | None"], Any]
_UNPLANNED: Final[Any] = object()


def _plain(schema: Any) -> bool:
    """No references and no data-contract rules: fastavro alone reads it exactly."""
    return not schema.references and schema.rule_set is None


def _parse_avro(schema_str: str) -> Any:
    return parse_schema(json.loads(schema_str))


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

    def __init__(
        self,
        format: Format,
        client: RegistryClient,
        url: str,
        *,
        validate_writer_schema: bool = True,
    ) -> None:
        if format not in _FACTORIES:
            raise ValueError(f"RegistryDecoder does not handle {format!r}")
        self.format: Format = format
        #: json_schema without writer-schema validation: the payload is passed on as is.
        self._passthrough = format == "json_schema" and not validate_writer_schema
        self._json_ids: dict[int, bool] = {}
        self._client = client
        self._url = url
        self._writer = _FACTORIES[format](client, False)
        self._latest = (
            _FACTORIES[format](client, True) if format in _READ_WITH_LATEST else self._writer
        )
        self._contexts: dict[str, SerializationContext] = {}
        self._writer_only_until: dict[str, float] = {}  # topic -> when to try latest again
        self._unknown_ids: dict[int, tuple[float, str]] = {}
        self._plans: dict[str, _Plans] = {}  # topic -> Avro direct-path plans
        self._parsed_writers: dict[int, Any] = {}

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]:
        ctx = self._contexts.get(topic)
        if ctx is None:
            ctx = self._contexts[topic] = SerializationContext(topic, MessageField.VALUE)
        deserialize = self._deserializer_for(topic)
        fast = self._fast_plans(topic, deserialize)
        unknown = self._unknown_ids
        dumps = orjson.dumps
        out: list[bytes | None] = []
        rejects: list[Reject] = []
        for position, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            plan: _Plan | None = None
            if len(value) > HEADER_SIZE and value[0] == MAGIC_BYTE:
                schema_id = int.from_bytes(value[1:HEADER_SIZE], "big")
                if unknown and schema_id in unknown:
                    known = unknown[schema_id]
                    if time.monotonic() - known[0] < UNKNOWN_ID_TTL_S:
                        rejects.append(Reject(position, UNKNOWN_SCHEMA, known[1]))
                        out.append(None)
                        continue
                if self._passthrough:
                    usable = self._json_ids.get(schema_id)
                    if usable is None:
                        usable = self._json_id_usable(schema_id)
                    if usable:
                        out.append(value[HEADER_SIZE:])
                        continue
                if fast is not None:
                    plan = fast[1].get(schema_id, _UNPLANNED)
                    if plan is _UNPLANNED:
                        plan = self._plan(schema_id, fast)
            if plan is not None:
                stream = BytesIO(value)
                stream.seek(HEADER_SIZE)
                try:
                    decoded = schemaless_reader(stream, plan[0], plan[1], False)
                except Exception as exc:
                    rejects.append(Reject(position, UNDECODABLE, describe(exc)))
                    out.append(None)
                    continue
            else:
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

    def _json_id_usable(self, schema_id: int) -> bool | None:
        """Whether ``schema_id`` is a registered JSON Schema (remembered), or ``None`` if it
        cannot be told now — the deserializer path then classifies the failure."""
        try:
            schema = self._client.get_schema(schema_id)
        except Exception:
            return None
        usable = schema.schema_type == "JSON"
        self._json_ids[schema_id] = usable
        return usable

    def _fast_plans(self, topic: str, deserialize: Deserializer) -> _Plans | None:
        """Avro's direct path for this batch: plans by writer id for the current reader,
        or ``None`` to use confluent-kafka's deserializer for every record."""
        if self.format != "avro":
            return None
        reader_id, reader_str = -1, None
        if deserialize is self._latest:
            try:
                latest = self._client.get_latest_version(f"{topic}-value")
            except Exception:
                return None  # the deserializer path classifies it (missing subject, outage)
            if not _plain(latest.schema):
                return None
            reader_id, reader_str = latest.schema_id, latest.schema.schema_str
        cached = self._plans.get(topic)
        if cached is not None and cached[0] == reader_id:
            return cached
        try:
            reader = None if reader_str is None else _parse_avro(reader_str)
        except Exception:
            return None
        plans: _Plans = (reader_id, {}, reader)
        self._plans[topic] = plans
        return plans

    def _plan(self, schema_id: int, plans: _Plans) -> _Plan | None:
        """How to read writer ``schema_id`` with ``plans``' reader; ``None`` (remembered) if
        the schema has what only confluent-kafka's deserializer handles (references, rules),
        ``None`` (not remembered) if it cannot be fetched now — the deserializer path then
        classifies the failure."""
        try:
            writer = self._client.get_schema(schema_id)
        except Exception:
            return None
        plan: _Plan | None = None
        if _plain(writer) and writer.schema_type in (None, "AVRO"):
            parsed = self._parsed_writers.get(schema_id)
            try:
                if parsed is None:
                    parsed = self._parsed_writers[schema_id] = _parse_avro(writer.schema_str or "")
                plan = (parsed, None if plans[0] in (-1, schema_id) else plans[2])
            except Exception:
                plan = None
        plans[1][schema_id] = plan
        return plan

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
