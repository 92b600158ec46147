"""A pipeline file's record formats: the decoder, the output encoder, the registry schema.

What :func:`stream.pipeline.build_stages` plugs into ``Stages.decoder`` / ``Stages.encoder``
(README "Schema Registry")::

    format: avro                       # json (default: no decoder) | avro | protobuf | json_schema
    schema_registry: {url: http://127.0.0.1:8081/apis/ccompat/v7, basic_auth_env: SR_AUTH}
    schema: {registry_subject: orders-value}   # the schema: the subject's latest version
    output_format: avro                # json (default) | avro | protobuf | json_schema
    output_schema_file: orders.enriched.avsc   # protobuf: a .proto (its first message)
    output_subject_strategy: topic     # topic (<topic>-value, default) | record (Avro full name)

* **Decoding** is :func:`stream.formats.make_decoder`'s, behind the ``schema-registry``
  circuit breaker (:class:`GuardedDecoder`): a registry that cannot be reached raises
  :class:`~stream.errors.TransientError` for the batch, the runner pauses the partitions
  and re-fetches the batch once the breaker lets a probe through; nothing is dead-lettered
  for it. The decoded JSON then goes through the pipeline's own schema as plain JSON does.
* **A schema from the registry** (``schema: {registry_subject: ...}``): the subject's
  latest version at start-up, translated to JSON Schema for the compiler — a JSON Schema
  as it is, an Avro schema by :func:`avro_to_json_schema`. Protobuf schemas, schema
  references and Avro unions of several complex types are refused with a ConfigError.
  The schema's text is folded into the lineage digest (``Settings.bind_schema``, called
  by :func:`stream.pipeline.compile_schema`), so a new version shows in the headers.
* **Encoding**: the output schemas (the enriched records' from ``output_schema_file`` —
  for ``json_schema`` by default the pipeline's schema plus ``event_time_ms`` and
  ``enrichment``; the correlation records' built in) are checked against the registry at
  start-up (an incompatible one fails with the registry's own message) and registered
  once; per record :class:`~stream.formats.output.OutputEncoder` writes the wire header
  and the payload itself, and a record its schema refuses becomes a reject the router
  dead-letters (stage ``encode``) instead of stopping the worker.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from fastavro import parse_schema

from stream.errors import ConfigError, TransientError
from stream.formats import FormatDecoder, make_decoder
from stream.formats.client import (
    RegistryClient,
    describe,
    is_not_found,
    make_client,
    registry_failure,
)
from stream.formats.output import OutputEncoder
from stream.stages import Reject

if TYPE_CHECKING:
    from stream.config import Settings
    from stream.resilience.circuit_breaker import CircuitBreaker
    from stream.stages.enrich import Breaker

#: The breaker's name (metrics label ``breaker``); not a valid join name, so it cannot clash.
REGISTRY_BREAKER: Final = "schema-registry"
#: ``schema: {registry_subject: <subject>}``
REGISTRY_SUBJECT_KEY: Final = "registry_subject"

CORRELATION_AVRO: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Correlation",
    "namespace": "stream",
    "fields": [
        {"name": "rule", "type": "string"},
        {"name": "kind", "type": "string"},
        {"name": "group", "type": {"type": "map", "values": "string"}},
        {"name": "window_start", "type": "long"},
        {"name": "window_end", "type": "long"},
        {"name": "aggregate", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "count", "type": "long"},
        {"name": "first_event_time", "type": "long"},
        {"name": "last_event_time", "type": "long"},
        {"name": "sample_event_ids", "type": {"type": "array", "items": "string"}},
        {"name": "final", "type": "boolean", "default": True},
        {"name": "first_offset", "type": "long", "default": -1},
        {"name": "last_offset", "type": "long", "default": -1},
    ],
}
CORRELATION_JSON_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "stream.Correlation",
    "type": "object",
    "properties": {
        "rule": {"type": "string"},
        "kind": {"type": "string"},
        "group": {"type": "object", "additionalProperties": {"type": "string"}},
        "window_start": {"type": "integer"},
        "window_end": {"type": "integer"},
        "aggregate": {"type": "string"},
        "value": {"type": "number"},
        "count": {"type": "integer"},
        "first_event_time": {"type": "integer"},
        "last_event_time": {"type": "integer"},
        "sample_event_ids": {"type": "array", "items": {"type": "string"}},
        "final": {"type": "boolean"},
        "first_offset": {"type": "integer"},
        "last_offset": {"type": "integer"},
    },
    "required": ["rule", "kind", "group", "window_start", "window_end", "value", "count"],
}

#: The correlation records in Protobuf (``output_format: protobuf``); field names as in
#: the JSON, so ``json_format`` maps one onto the other.
CORRELATION_PROTO: Final = """syntax = "proto3";
package stream;

message Correlation {
  string rule = 1;
  string kind = 2;
  map<string, string> group = 3;
  int64 window_start = 4;
  int64 window_end = 5;
  string aggregate = 6;
  double value = 7;
  int64 count = 8;
  int64 first_event_time = 9;
  int64 last_event_time = 10;
  repeated string sample_event_ids = 11;
  bool final = 12;
  int64 first_offset = 13;
  int64 last_offset = 14;
}
"""


# -- settings ------------------------------------------------------------------------------


def registry_url(settings: Settings) -> str | None:
    """``STREAM_SCHEMA_REGISTRY_URL``, else ``schema_registry.url``."""
    return settings.schema_registry_url or settings.schema_registry.url


def basic_auth(settings: Settings) -> str | None:
    """``USER:PASSWORD`` from the variable ``schema_registry.basic_auth_env`` names."""
    name = settings.schema_registry.basic_auth_env
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            "schema_registry.basic_auth_env",
            f"environment variable {name} is not set (it should hold USER:PASSWORD)",
        )
    return value


def registry_subject(settings: Settings) -> str | None:
    """The subject of ``schema: {registry_subject: <subject>}``, if that is the schema."""
    inline = settings.schema_inline
    if inline is None or set(inline) != {REGISTRY_SUBJECT_KEY}:
        return None
    subject = inline[REGISTRY_SUBJECT_KEY]
    if isinstance(subject, Mapping):
        return None  # an inline schema with a property called registry_subject
    if not isinstance(subject, str) or not subject:
        raise ConfigError("schema.registry_subject", "must be a subject name, e.g. orders-value")
    return subject


def _require_url(settings: Settings, what: str) -> str:
    url = registry_url(settings)
    if not url:
        raise ConfigError(
            "schema_registry.url",
            f"{what} needs a schema registry: set schema_registry.url or "
            "STREAM_SCHEMA_REGISTRY_URL (`stream registry start` runs one locally)",
        )
    return url


def _client(settings: Settings, url: str) -> RegistryClient:
    ttl = settings.schema_registry.latest_ttl / 1000.0
    return make_client(url, basic_auth(settings), latest_ttl=ttl)


def registry_breaker(settings: Settings) -> CircuitBreaker | None:
    """The circuit breaker in front of the registry for a pipeline that decodes through it."""
    if settings.format == "json":
        return None
    from stream.resilience.circuit_breaker import CircuitBreaker

    return CircuitBreaker(
        REGISTRY_BREAKER,
        failure_threshold=3,
        recovery_timeout=settings.schema_registry.recovery_timeout / 1000.0,
        failure_on=(TransientError,),
    )


# -- the pipeline's schema from the registry ---------------------------------------------------


class RegistrySchema(NamedTuple):
    """The pipeline's schema as the registry holds it, translated for the compiler."""

    #: The JSON Schema document the compiler reads.
    doc: dict[str, Any]
    #: For error messages: ``registry subject orders-value version 3``.
    source: str
    #: The registered schema's text, as the registry returned it (the lineage digest).
    text: str


def registry_schema_document(settings: Settings) -> RegistrySchema:
    """The JSON Schema document for ``schema: {registry_subject: ...}``: the subject's
    latest version."""
    subject = registry_subject(settings)
    assert subject is not None
    where = "schema.registry_subject"
    url = _require_url(settings, f"{where} {subject!r}")
    client = _client(settings, url)
    try:
        latest = client.get_latest_version(subject)
    except Exception as exc:
        failure = registry_failure(exc, url)
        if failure is not None:
            raise failure from exc
        if is_not_found(exc):
            raise ConfigError(
                where, f"subject {subject!r} is not in the registry at {url}: {describe(exc)}"
            ) from exc
        raise ConfigError(where, f"cannot read subject {subject!r}: {describe(exc)}") from exc
    schema = latest.schema
    source = f"registry subject {subject} version {latest.version}"
    kind = schema.schema_type or "AVRO"
    if schema.references:
        raise ConfigError(
            where, f"{source} has schema references, which are not translated; give schema_file"
        )
    try:
        parsed = json.loads(schema.schema_str or "")
    except ValueError as exc:
        if kind == "PROTOBUF":
            parsed = None
        else:
            raise ConfigError(where, f"{source} is not JSON: {exc}") from exc
    text = schema.schema_str or ""
    if kind == "AVRO":
        return RegistrySchema(avro_to_json_schema(parsed, source), source, text)
    if kind == "JSON":
        if not isinstance(parsed, dict):
            raise ConfigError(where, f"{source} is not a JSON Schema object")
        return RegistrySchema(parsed, source, text)
    raise ConfigError(
        where,
        f"{source} is a {kind} schema, which is not translated to JSON Schema: describe the "
        "decoded records with schema_file or an inline schema instead",
    )


_AVRO_PRIMITIVES: Final[dict[str, str]] = {
    "null": "null",
    "boolean": "boolean",
    "int": "integer",
    "long": "integer",
    "float": "number",
    "double": "number",
    "string": "string",
    "bytes": "string",  # base64 text in the decoded JSON
}
#: fastavro decodes these into aware datetimes, which the JSON carries as RFC 3339.
_AVRO_DATE_TIME: Final = frozenset({"timestamp-millis", "timestamp-micros"})
#: ... and these into values the JSON carries as text (dates, times, UUIDs, decimals).
_AVRO_TEXT: Final = frozenset(
    {
        "date",
        "time-millis",
        "time-micros",
        "uuid",
        "decimal",
        "local-timestamp-millis",
        "local-timestamp-micros",
    }
)


def avro_to_json_schema(schema: Any, source: str = "avro schema") -> dict[str, Any]:
    """The JSON Schema of what the decoder makes of records of Avro ``schema``.

    ``record`` → object (a field with a ``default`` is optional, the others required),
    ``enum`` → ``enum``, ``array``/``map`` → array/object of the item type, ``int``/``long``
    → integer, ``float``/``double`` → number, ``bytes``/``fixed`` → string (base64),
    ``timestamp-millis``/``-micros`` → date-time string, other logical types → string, a
    union → the list of its types (``["string", "null"]``; at most one complex branch).
    Recursive types and unions of several records/arrays/maps raise ConfigError.
    """
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        raise ConfigError("schema.registry_subject", f"{source}: the top level must be a record")
    doc = _AvroTranslator(source).node(schema, "", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc}


class _AvroTranslator:
    def __init__(self, source: str) -> None:
        self.source = source
        self.named: dict[str, dict[str, Any]] = {}
        self.open: set[str] = set()

    def refuse(self, pointer: str, why: str) -> ConfigError:
        return ConfigError("schema.registry_subject", f"{self.source}: at {pointer or '/'}: {why}")

    def full_name(self, name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def node(self, schema: Any, pointer: str, namespace: str | None) -> dict[str, Any]:
        if isinstance(schema, str):
            if schema in _AVRO_PRIMITIVES:
                return {"type": _AVRO_PRIMITIVES[schema]}
            full = self.full_name(schema, namespace)
            if full in self.open or schema in self.open:
                raise self.refuse(pointer, f"recursive type {schema!r} cannot be translated")
            named = self.named.get(full) or self.named.get(schema)
            if named is None:
                raise self.refuse(pointer, f"unknown type {schema!r}")
            return copy.deepcopy(named)
        if isinstance(schema, list):
            return self.union(schema, pointer, namespace)
        if not isinstance(schema, dict):
            raise self.refuse(pointer, f"not an Avro schema: {schema!r}")
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical in _AVRO_DATE_TIME and kind == "long":
            return {"type": "string", "format": "date-time"}
        if logical in _AVRO_TEXT:
            return {"type": "string"}
        if isinstance(kind, str) and kind in _AVRO_PRIMITIVES:
            return {"type": _AVRO_PRIMITIVES[kind]}
        if isinstance(kind, list | dict):
            return self.node(kind, pointer, namespace)
        if kind in ("record", "error"):
            full = self.full_name(str(schema.get("name", "")), schema.get("namespace", namespace))
            inner_ns = full.rpartition(".")[0] or None
            self.open.add(full)
            properties: dict[str, Any] = {}
            required: list[str] = []
            for field in schema.get("fields", ()):
                name = field["name"]
                properties[name] = self.node(field["type"], f"{pointer}/{name}", inner_ns)
                if "default" not in field:
                    required.append(name)
            self.open.discard(full)
            doc: dict[str, Any] = {"type": "object", "properties": properties}
            if required:
                doc["required"] = required
            self.named[full] = doc
            return copy.deepcopy(doc)
        if kind == "enum":
            doc = {"enum": list(schema.get("symbols", ()))}
            self.named[self.full_name(str(schema.get("name", "")), namespace)] = doc
            return dict(doc)
        if kind == "fixed":
            doc = {"type": "string"}
            self.named[self.full_name(str(schema.get("name", "")), namespace)] = doc
            return dict(doc)
        if kind == "array":
            return {
                "type": "array",
                "items": self.node(schema["items"], f"{pointer}/[]", namespace),
            }
        if kind == "map":
            values = self.node(schema["values"], f"{pointer}/{{}}", namespace)
            return {"type": "object", "additionalProperties": values}
        raise self.refuse(pointer, f"Avro type {kind!r} cannot be translated")

    def union(self, branches: list[Any], pointer: str, namespace: str | None) -> dict[str, Any]:
        parts = [self.node(b, pointer, namespace) for b in branches]
        nullable = {"type": "null"} in parts
        rest = [p for p in parts if p != {"type": "null"}]
        simple = [p for p in rest if set(p) == {"type"} and isinstance(p["type"], str)]
        if len(rest) - len(simple) > 1 or (len(rest) > len(simple) and simple):
            raise self.refuse(
                pointer, "a union of a record, array, map, enum or date-time with other types"
            )
        if len(simple) == len(rest):
            types = list(dict.fromkeys(p["type"] for p in simple))
            if nullable:
                types.append("null")
            return {"type": types[0] if len(types) == 1 else types}
        doc = dict(rest[0])
        if nullable:
            if "enum" in doc:
                doc["enum"] = [*doc["enum"], None]
            else:
                doc["type"] = [doc["type"], "null"]
        return doc


# -- decoding --------------------------------------------------------------------------------


class GuardedDecoder:
    """A format decoder behind the registry's circuit breaker (``Stages.decoder``).

    Open breaker: :class:`TransientError` without calling anything. A batch that fails with
    TransientError (the registry unreachable) counts as a failure, any other outcome as a
    success — records whose schemas are cached decode during an outage and count as such.
    """

    def __init__(self, inner: FormatDecoder, breaker: Breaker | None, url: str) -> None:
        self.inner = inner
        self.format = inner.format
        self._breaker = breaker
        self._url = url

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]:
        breaker = self._breaker
        if breaker is None:
            return self.inner.decode_batch(topic, values)
        if not breaker.allow():
            raise TransientError(
                f"schema registry at {self._url}: circuit breaker {REGISTRY_BREAKER!r} is open"
            )
        try:
            result = self.inner.decode_batch(topic, values)
        except TransientError as exc:
            breaker.record_failure(exc)
            raise
        except BaseException:
            breaker.record_success()  # the registry answered (a ConfigError stops the worker)
            raise
        breaker.record_success()
        return result


def build_decoder(settings: Settings, breaker: Breaker | None = None) -> GuardedDecoder | None:
    """``Stages.decoder`` for ``format:``; None for ``json`` (today's path, no decoder)."""
    if settings.format == "json":
        return None
    url = _require_url(settings, f"format: {settings.format}")
    spec = settings.schema_registry
    inner = make_decoder(
        settings.format,
        url,
        basic_auth(settings),
        validate_writer_schema=spec.validate_writer_schema,
        latest_ttl=spec.latest_ttl / 1000.0,
    )
    return GuardedDecoder(inner, breaker, url)


# -- encoding --------------------------------------------------------------------------------


def pipeline_schema_document(settings: Settings) -> dict[str, Any]:
    """The pipeline's JSON Schema document, whichever way the file gives it."""
    from stream.schema import inline_to_json_schema
    from stream.schema.loader import read_schema_document

    if registry_subject(settings) is not None:
        return registry_schema_document(settings).doc
    if settings.schema_inline is not None:
        return inline_to_json_schema(settings.schema_inline, source=settings.pipeline_file or "")
    if settings.schema_file is None:
        raise ConfigError("schema", "a pipeline needs schema_file or schema")
    doc = read_schema_document(Path(settings.schema_file))
    if not isinstance(doc, dict):
        raise ConfigError("schema_file", "must hold a JSON Schema object")
    return doc


def enriched_json_schema(input_doc: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's schema plus the two fields the enrich stage adds."""
    doc = copy.deepcopy(dict(input_doc))
    properties = doc.setdefault("properties", {})
    properties["event_time_ms"] = {"type": "integer"}
    properties["enrichment"] = {"type": "object"}
    doc["required"] = list(dict.fromkeys([*doc.get("required", []), "event_time_ms"]))
    return doc


def _output_schema_text(settings: Settings) -> str:
    name = settings.output_schema_file
    assert name is not None
    path = Path(name)
    if not path.is_absolute() and settings.pipeline_file:
        path = Path(settings.pipeline_file).parent / path
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("output_schema_file", f"cannot read {path}: {exc.strerror}") from None


def _output_schema_file(settings: Settings) -> Any:
    try:
        return json.loads(_output_schema_text(settings))
    except ValueError as exc:
        raise ConfigError(
            "output_schema_file", f"{settings.output_schema_file} is not valid JSON: {exc}"
        ) from None


def enriched_output_schema(settings: Settings) -> str:
    """The enriched records' schema text in ``output_format``."""
    if settings.output_format == "protobuf":
        if settings.output_schema_file is None:
            raise ConfigError(
                "output_schema_file",
                "output_format: protobuf needs the .proto file of the enriched records (its "
                "first message is written): the input fields, event_time_ms (int64) and "
                "enrichment (a message of the joins' and derived fields)",
            )
        return _output_schema_text(settings)
    if settings.output_schema_file is not None:
        doc = _output_schema_file(settings)
        if settings.output_format == "avro":
            try:
                parse_schema(doc)
            except Exception as exc:
                raise ConfigError("output_schema_file", f"not a valid Avro schema: {exc}") from None
            if not isinstance(doc, dict) or doc.get("type") != "record":
                raise ConfigError("output_schema_file", "the Avro schema must be a record")
        return json.dumps(doc)
    if settings.output_format == "avro":
        raise ConfigError(
            "output_schema_file",
            "output_format: avro needs the Avro schema (.avsc) of the enriched records: the "
            "input fields, event_time_ms (long) and enrichment (a record of the joins' fields)",
        )
    return json.dumps(enriched_json_schema(pipeline_schema_document(settings)))


def build_encoder(settings: Settings) -> OutputEncoder | None:
    """``Stages.encoder`` for ``output_format:``, its schemas checked for compatibility."""
    if settings.output_format == "json":
        return None
    url = _require_url(settings, f"output_format: {settings.output_format}")
    correlation = {
        "avro": json.dumps(CORRELATION_AVRO),
        "json_schema": json.dumps(CORRELATION_JSON_SCHEMA),
        "protobuf": CORRELATION_PROTO,
    }[settings.output_format]
    schemas = {
        settings.topics.enriched: enriched_output_schema(settings),
        settings.topics.correlations: correlation,
    }
    if settings.output_subject_strategy == "record" and settings.output_format != "avro":
        raise ConfigError(
            "output_subject_strategy", "record names the Avro record: it needs output_format: avro"
        )
    encoder = OutputEncoder(
        settings.output_format,
        url,
        _client(settings, url),
        schemas,
        settings.output_subject_strategy,
    )
    encoder.check_compatible()
    return encoder


def register_outputs(encoder: object) -> None:
    """Start-up: register the output schemas so encoding never waits for the registry."""
    if isinstance(encoder, OutputEncoder):
        encoder.register()
