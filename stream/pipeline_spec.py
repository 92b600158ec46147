"""The pipeline-shape sections of a pipeline file: schema, event time, joins, derived fields.

A pipeline file describes one pipeline completely (README "Pipeline files")::

    pipeline: orders
    topics: {input: orders, enriched: orders.enriched, correlations: orders.alerts, dlq: orders.dlq}
    event_id: order_id
    event_time: {field: created_at}          # number = epoch ms (unit: s for seconds) | RFC 3339
    key: customer_id
    schema_file: orders.schema.json          # or `schema:` inline
    enrich:
      - name: customer
        table: {topic: reference.customers}
        on: customer_id
        fields: [segment, country]
        missing: mark
      - name: fx
        http: {url: "http://127.0.0.1:8089/rates/{currency}", timeout: 200ms, cache_ttl: 60s}
        on: currency
    derive:
      amount_eur: "amount * enrichment.fx.rate"
    correlate:
      rules: [...]
    format: avro                             # json (default) | avro | protobuf | json_schema
    schema_registry: {url: "http://127.0.0.1:8081/apis/ccompat/v7", basic_auth_env: SR_AUTH}
    output_format: avro                      # json (default) | avro | protobuf | json_schema
    output_schema_file: orders-enriched.avsc
    output_subject_strategy: topic           # topic (default) | record

These models check the shape of each section; whether the fields they name exist is
checked against the compiled schema when the pipeline is built
(:mod:`stream.pipeline`). Every model is frozen and forbids unknown keys, so a typo
fails at start-up naming its path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stream.windows.spec import Duration, FieldPath, PositiveDuration

_FROZEN = ConfigDict(frozen=True, extra="forbid")
#: Names of joins and derived fields: they become JSON keys and expression identifiers.
_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=_NAME_PATTERN, max_length=100)]


class EventTimeSpec(BaseModel):
    """Which field holds event time; a number is epoch ms (or ``unit: s``), a string RFC 3339."""

    model_config = _FROZEN
    field: FieldPath
    unit: Literal["ms", "s"] = "ms"


class TableSource(BaseModel):
    """A compacted topic: record key = join value, record value = a JSON object."""

    model_config = _FROZEN
    topic: Annotated[str, Field(min_length=1)]


class HttpSource(BaseModel):
    """An HTTP service answering ``GET url`` with a JSON object (404 = not found).

    ``url`` holds one ``{placeholder}`` (any name) that is replaced by the
    URL-encoded join value.
    """

    model_config = _FROZEN
    url: Annotated[str, Field(min_length=1)]
    timeout: PositiveDuration = 200
    cache_ttl: PositiveDuration = 60_000
    #: Distinct keys looked up concurrently per batch.
    concurrency: int = Field(default=16, ge=1, le=256)

    @model_validator(mode="after")
    def _one_placeholder(self) -> HttpSource:
        if len(re.findall(r"\{[^{}]*\}", self.url)) != 1:
            raise ValueError("url needs exactly one {placeholder} for the join value")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return self


class PostgresSource(BaseModel):
    """A PostgreSQL query read whole every ``refresh_interval`` and served from memory.

    The query's ``key_column`` holds the join value; the other columns are the fields.
    """

    model_config = _FROZEN
    #: Environment variable holding the DSN (secrets stay out of the file).
    dsn_env: Annotated[str, Field(min_length=1)]
    query: Annotated[str, Field(min_length=1)]
    key_column: Annotated[str, Field(min_length=1)]
    refresh_interval: PositiveDuration = 30_000


class JoinSpec(BaseModel):
    """One enrichment lookup; its fields land under ``enrichment.<name>``."""

    model_config = _FROZEN
    name: Name
    table: TableSource | None = None
    http: HttpSource | None = None
    postgres: PostgresSource | None = None
    #: Field path in the event whose value is looked up.
    on: FieldPath
    #: Fields of the looked-up value to keep (default: all).
    fields: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    #: No value for the key: ``mark`` (enrichment.<name> = null), ``dlq`` or ``drop`` the event.
    missing: Literal["mark", "dlq", "drop"] = "mark"
    #: Put the fields directly into ``enrichment`` instead of ``enrichment.<name>``.
    flatten: bool = False
    #: With ``flatten``: a boolean field saying whether the key was found.
    found_flag: Name | None = None
    #: The lookup unavailable (breaker open): ``degrade`` marks events, ``pause`` waits.
    on_failure: Literal["degrade", "pause"] = "degrade"

    @model_validator(mode="after")
    def _one_source(self) -> JoinSpec:
        sources = [s for s in (self.table, self.http, self.postgres) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of table, http, postgres")
        if self.found_flag is not None and not self.flatten:
            raise ValueError("found_flag needs flatten: true (otherwise null marks a miss)")
        return self

    @property
    def source_kind(self) -> str:
        return "table" if self.table else "http" if self.http else "postgres"


class UserStageSpec(BaseModel):
    """A stage of your own (``stream.stages.user``), run after ``validate`` or ``enrich``."""

    model_config = _FROZEN
    #: ``module:function``, imported at start-up (the module must be importable).
    python: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    #: Name in metrics, DLQ records (``dlq.stage``) and the agent chain; default: the function's.
    name: Name | None = None
    after: Literal["validate", "enrich"] = "enrich"
    #: Topics the stage may ``emit()`` to.
    topics: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    #: Async stages: time allowed per call, then ``retries`` more tries, then ``on_failure``.
    timeout: PositiveDuration = 5_000
    retries: int = Field(default=2, ge=0, le=20)
    #: The stage's service unavailable (timeouts, breaker open): wait (``pause``) or dead-letter.
    on_failure: Literal["pause", "dlq"] = "pause"

    @property
    def stage_name(self) -> str:
        return self.name or self.python.rsplit(":", 1)[1]


def _unique_names(joins: tuple[JoinSpec, ...]) -> tuple[JoinSpec, ...]:
    seen: set[str] = set()
    for i, join in enumerate(joins):
        if join.name in seen:
            raise ValueError(f"enrich[{i}]: duplicate enrichment name {join.name!r}")
        seen.add(join.name)
    return joins


def check_joins(joins: Any) -> Any:
    """Used by the settings model: join names are unique."""
    return _unique_names(tuple(joins))


# -- record formats (README "Schema Registry") ---------------------------------------------

#: ``format:`` of the input values. ``json`` is today's path (no decoder); the others are
#: Confluent-framed (magic byte, schema id) and read through the schema registry.
RecordFormat = Literal["json", "avro", "protobuf", "json_schema"]
#: ``output_subject_strategy:`` ``topic`` = TopicNameStrategy (``<topic>-value``),
#: ``record`` = RecordNameStrategy (the Avro record's full name).
SubjectStrategyName = Literal["topic", "record"]


class SchemaRegistrySpec(BaseModel):
    """``schema_registry: {url: ..., basic_auth_env: ...}``.

    ``url`` is the Confluent-compatible API base (Apicurio: ``.../apis/ccompat/v7``);
    ``STREAM_SCHEMA_REGISTRY_URL`` overrides it. ``basic_auth_env`` names the environment
    variable holding ``USER:PASSWORD`` (secrets stay out of the file).
    """

    model_config = _FROZEN
    url: Annotated[str, Field(min_length=1)] | None = None
    basic_auth_env: Annotated[str, Field(min_length=1)] | None = None
    #: How long the registry's circuit breaker stays open before a probe batch.
    recovery_timeout: PositiveDuration = 5_000
    #: How long a subject's latest version (Avro's reader schema) is reused before the
    #: registry is asked again: a new version is picked up within this time.
    latest_ttl: PositiveDuration = 30_000
    #: ``json_schema`` input: also check each payload against its writer schema
    #: (``jsonschema``, ~55 µs per record); the pipeline's own schema checks it anyway.
    validate_writer_schema: bool = False


#: ``derive:`` — name -> expression, evaluated in declaration order.
DeriveSpec = dict[Annotated[str, Field(pattern=_NAME_PATTERN)], Annotated[str, Field(min_length=1)]]

__all__ = [
    "DeriveSpec",
    "Duration",
    "EventTimeSpec",
    "HttpSource",
    "JoinSpec",
    "PostgresSource",
    "RecordFormat",
    "SchemaRegistrySpec",
    "SubjectStrategyName",
    "TableSource",
    "UserStageSpec",
    "check_joins",
]
