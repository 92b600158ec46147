"""Record value formats: plain JSON, or Avro / Protobuf / JSON Schema through a schema registry.

Building blocks for the validate stage and the outputs; they know nothing about Kafka
consumers, Faust or metrics. A decoder turns a batch of raw values into JSON bytes, so the
existing JSON validation path runs unchanged after it::

    decoder = make_decoder("avro", "http://127.0.0.1:8081/apis/ccompat/v7")
    json_values, rejects = decoder.decode_batch("events", [record.value() for record in batch])

Reject reasons (``Reject.error_class``): ``bad_framing`` (no schema-registry header),
``unknown_schema`` (an id the registry does not know), ``undecodable`` (the payload does
not read with its schema). An unreachable registry raises
:class:`~stream.errors.TransientError` for the whole batch — pause and retry, never
dead-letter. Writer schemas are fetched once per id and cached for the process's life.

``FormatEncoder`` serializes output dicts, registering the schema under the topic's
subject, and ``check_compatible`` refuses an incompatible output schema at start-up with
the registry's own message. The registry is any Confluent-compatible one;
``stream registry start`` runs Apicurio Registry locally (:mod:`stream.registry`).
"""

from __future__ import annotations

from stream.errors import ConfigError
from stream.formats.base import (
    BAD_FRAMING,
    FORMATS,
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    Format,
    FormatDecoder,
    JsonDecoder,
)
from stream.formats.encoder import FormatEncoder, SubjectStrategy


def make_decoder(
    format: Format,
    registry_url: str | None,
    basic_auth: str | None = None,
    *,
    validate_writer_schema: bool = True,
    latest_ttl: float | None = None,
) -> FormatDecoder:
    """The decoder for ``format``; every format but ``json`` needs ``registry_url`` (the
    Confluent-compatible API base, e.g. ``…/apis/ccompat/v7`` for Apicurio).

    ``validate_writer_schema=False`` (``json_schema`` only) skips checking each payload
    against its writer schema — ~55 µs per record — and leaves validation to the pipeline.
    ``latest_ttl``: seconds a subject's latest version (Avro's reader schema) is reused
    before the registry is asked again (default :data:`~stream.formats.client.LATEST_TTL_S`).
    """
    if format == "json":
        return JsonDecoder()
    if format not in FORMATS:
        raise ConfigError("input.format", f"unknown format {format!r}; use one of {FORMATS}")
    if not registry_url:
        raise ConfigError(
            "schema_registry.url",
            f"format {format!r} needs a schema registry: set STREAM_SCHEMA_REGISTRY_URL "
            "(or run `stream registry start`)",
        )
    from stream.formats.client import LATEST_TTL_S, make_client

    ttl = LATEST_TTL_S if latest_ttl is None else latest_ttl
    client = make_client(registry_url, basic_auth, latest_ttl=ttl)
    if format == "protobuf":
        from stream.formats.protobuf import ProtobufDecoder

        return ProtobufDecoder(client, registry_url, basic_auth)
    from stream.formats.decoders import RegistryDecoder

    return RegistryDecoder(
        format, client, registry_url, validate_writer_schema=validate_writer_schema
    )


__all__ = [
    "BAD_FRAMING",
    "FORMATS",
    "UNDECODABLE",
    "UNKNOWN_SCHEMA",
    "Format",
    "FormatDecoder",
    "FormatEncoder",
    "JsonDecoder",
    "SubjectStrategy",
    "make_decoder",
]
