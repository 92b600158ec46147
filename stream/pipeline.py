"""A pipeline file's settings compiled into the stages the runner drives.

:func:`build_stages` runs once at start-up: it compiles the schema into a msgspec
Struct (:mod:`stream.schema`), checks every field a join, expression, rule, the
event time, the event id or the output key names against it, compiles the derived
fields (:mod:`stream.expressions`) and returns ready :class:`Stages`. Any problem
is a :class:`~stream.errors.ConfigError` naming the pipeline file, the path in it
and the reason — before the worker touches Kafka.

Lookups are passed in (``lookups``: join name -> source), because where they come
from (a topic read to its end, an HTTP service, PostgreSQL) is I/O the application
owns; :func:`stream.lookups.build_lookups` makes them for the worker and the
test driver gives tables of its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from stream.config import Settings
from stream.errors import ConfigError
from stream.expressions import compile_derived
from stream.fieldpaths import SchemaFields, single_getter
from stream.runtime.user_steps import UserStep, load_user_steps
from stream.schema import (
    CompiledSchema,
    compile_inline_schema,
    compile_json_schema,
    load_schema_file,
)
from stream.stages import Reject
from stream.stages.correlate import Correlator
from stream.stages.enrich import Breaker, Enricher, Join, ReferenceLookup, ReferenceTable
from stream.stages.validate import EventTime, Validator

#: Encoded names of derived-field slots on decoded events (no real input uses them).
_DERIVED_PREFIX: Final = "$$stream.derived:"
_JOIN_FIELD: Final = re.compile(r"\benrichment\.([A-Za-z_]\w*)\.([A-Za-z_][\w.]*)")


@dataclass
class Stages:
    """The compiled pipeline: its schema and the three stages."""

    schema: CompiledSchema
    fields: SchemaFields
    validator: Validator
    enricher: Enricher
    correlator: Correlator
    #: ``key(event) -> bytes | None``: the output record key (None: the input key).
    output_key: Callable[[Any], bytes | None] | None
    #: Optional top-level fields and a reader of each (data-quality gauges).
    optional_fields: dict[str, Callable[[Any], Any]]
    #: Input records not in plain JSON (Avro, Protobuf, JSON Schema framing): turned into
    #: JSON bytes before validation. None for ``format: json``.
    decoder: RecordDecoder | None = None
    #: Output records in another format than JSON (``output_format``); None for JSON.
    encoder: RecordEncoder | None = None
    #: The pipeline file's own stages (``stages:``), imported and checked.
    user_steps: list[UserStep] = field(default_factory=list)


class RecordDecoder(Protocol):
    """Turns framed input values into JSON bytes (``stream.formats``).

    Rejected positions come back as None with a :class:`~stream.stages.Reject`;
    an unreachable registry raises :class:`~stream.errors.TransientError`.
    """

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]: ...


class RecordEncoder(Protocol):
    """Turns JSON output values into the output format, per topic.

    ``encode_records``: the values that fit, and a :class:`~stream.stages.Reject` for each
    one the output schema refuses (dead-lettered, stage ``encode``); ``encode_values``: all
    of them or :class:`~stream.errors.FatalError` (built-in schemas: correlations).
    """

    def encode_records(
        self, topic: str, values: list[bytes]
    ) -> tuple[list[bytes], list[Reject]]: ...

    def encode_values(self, topic: str, values: list[bytes]) -> list[bytes]: ...


def uses_registry(settings: Settings) -> bool:
    """Record formats or a schema held by the registry: only then is :mod:`stream.formats`
    loaded (its registry client takes a second or more to import)."""
    inline = settings.schema_inline
    return (
        settings.format != "json"
        or settings.output_format != "json"
        or (inline is not None and "registry_subject" in inline)
    )


def compile_schema(settings: Settings) -> CompiledSchema:
    """The pipeline's schema, from ``schema_file``, ``schema`` (inline) or the registry
    (``schema: {registry_subject: ...}``, README "Schema Registry")."""
    if uses_registry(settings):
        from stream.formats import pipeline as formats

        if formats.registry_subject(settings) is not None:
            held = formats.registry_schema_document(settings)
            settings.bind_schema(held.text)  # a new version changes the lineage digest
            return compile_json_schema(held.doc, source=held.source)
    if settings.schema_inline is not None:
        return compile_inline_schema(settings.schema_inline, source=settings.pipeline_file or "")
    if settings.schema_file is None:
        raise ConfigError("schema", "a pipeline needs schema_file or schema")
    path = Path(settings.schema_file)
    if not path.is_file():
        raise ConfigError("schema_file", f"cannot read {path}: no such file")
    return load_schema_file(path)


def build_stages(
    settings: Settings,
    lookups: Mapping[str, ReferenceLookup],
    breakers: Mapping[str, Breaker] | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> Stages:
    """Compile ``settings`` into stages; ConfigError naming the file and path on any problem.

    ``clock``: the wall clock of the validate stage's "too far in the future" check.
    """
    source = settings.pipeline_file or "(settings)"
    try:
        return _build(settings, lookups, breakers or {}, clock)
    except ConfigError as exc:
        raise exc.in_file(source) from None


def _build(
    settings: Settings,
    lookups: Mapping[str, ReferenceLookup],
    breakers: Mapping[str, Breaker],
    clock: Callable[[], float],
) -> Stages:
    schema = compile_schema(settings)
    derived_names = list(settings.derive)
    for name in derived_names:
        if name in schema.fields:
            raise ConfigError(f"derive.{name}", "is already a field of the schema")
    struct, derived_attrs = _with_derived_slots(schema.struct, derived_names)
    fields = _RecordingFields(schema.fields, derived_attrs)
    plain = SchemaFields(schema.fields)

    validator = _validator(settings, struct, plain, clock)

    joins: list[Join] = []
    for i, spec in enumerate(settings.joins):
        _check(plain, spec.on, f"enrich[{i}].on")
        lookup = lookups.get(spec.name)
        if lookup is None:
            raise ConfigError(f"enrich[{i}]", f"no lookup for enrichment {spec.name!r}")
        breaker = breakers.get(spec.name)
        on_failure = spec.on_failure
        if spec.name == settings.reference_join:
            on_failure = settings.enrich.on_lookup_failure
        joins.append(
            Join(
                name=spec.name,
                on=spec.on,
                lookup=lookup,
                fields=spec.fields,
                missing=spec.missing,
                flatten=spec.flatten,
                found_flag=spec.found_flag,
                breaker=breaker,
                pause_on_failure=on_failure == "pause",
            )
        )
    known = _expression_inputs(schema, settings)
    derived = compile_derived(settings.derive, known)

    correlate = settings.correlate
    correlator = Correlator(
        correlate.rules,
        allowed_lateness_ms=correlate.allowed_lateness_ms,
        idle_timeout_ms=correlate.idle_timeout_ms,
        late_policy=correlate.late_policy,
        max_keys=correlate.max_keys,
        sample_size=correlate.sample_size,
        fields=fields,
        event_id=_checked(plain, settings.event_id, "event_id"),
    )
    set_derived = _derived_setter(derived_attrs) if fields.extra_used else None
    enricher = Enricher(joins, derived, fields=plain, set_derived=set_derived)

    output_key = None
    if settings.key is not None:
        _check(plain, settings.key, "key")
        get_key = single_getter(plain, settings.key, "key")
        output_key = _key_encoder(get_key)
    optional = {
        path: single_getter(plain, path, "presence")
        for path, info in schema.fields.items()
        if "." not in path and any(info.optional)
    }
    # Record formats (README "Schema Registry"): None for JSON in and out (today's path).
    decoder = encoder = None
    if uses_registry(settings):
        from stream.formats import pipeline as formats

        decoder = formats.build_decoder(settings, breakers.get(formats.REGISTRY_BREAKER))
        encoder = formats.build_encoder(settings)
    user_steps = load_user_steps(settings.stages, settings.topics.input)
    return Stages(
        schema,
        plain,
        validator,
        enricher,
        correlator,
        output_key,
        optional,
        decoder,
        encoder,
        user_steps,
    )


def check_pipeline(settings: Settings) -> Stages:
    """Compile the pipeline with empty lookups: every start-up error, no I/O."""
    return build_stages(settings, {join.name: ReferenceTable() for join in settings.joins})


def build_validator(settings: Settings) -> Validator:
    """Just the validate stage (e.g. ``stream ingest`` checks rows before producing them)."""
    source = settings.pipeline_file or "(settings)"
    try:
        schema = compile_schema(settings)
        return _validator(settings, schema.struct, SchemaFields(schema.fields))
    except ConfigError as exc:
        raise exc.in_file(source) from None


def _validator(
    settings: Settings,
    struct: type[msgspec.Struct],
    plain: SchemaFields,
    clock: Callable[[], float] = time.time,
) -> Validator:
    if settings.event_time is None:
        raise ConfigError("event_time", "required: {field: <path of the event-time field>}")
    time_path = settings.event_time.field
    _check(plain, time_path, "event_time.field")
    validation = settings.validation
    return Validator(
        msgspec.json.Decoder(struct),
        EventTime(
            single_getter(plain, time_path, "event_time"), time_path, settings.event_time.unit
        ),
        max_event_bytes=validation.max_event_bytes,
        max_future_ms=validation.max_future_ms,
        min_event_time_ms=validation.min_event_time_ms,
        clock=clock,
    )


def _check(fields: SchemaFields, path: str, where: str) -> None:
    try:
        fields.check(path)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def _checked(fields: SchemaFields, path: str | None, where: str) -> str | None:
    if path is not None:
        _check(fields, path, where)
    return path


def _expression_inputs(schema: CompiledSchema, settings: Settings) -> list[str]:
    """What derived expressions may read: schema fields and the joins' fields."""
    known = list(schema.fields)
    for spec in settings.joins:
        if spec.fields is not None:
            known.extend(f"enrichment.{spec.name}.{f}" for f in spec.fields)
            continue
        # All of the looked-up value's fields are kept: any path under the join is fine.
        for text in settings.derive.values():
            known.extend(
                f"enrichment.{m.group(1)}.{m.group(2)}"
                for m in _JOIN_FIELD.finditer(text)
                if m.group(1) == spec.name
            )
    return known


def _with_derived_slots(
    struct: type[msgspec.Struct], names: list[str]
) -> tuple[type[msgspec.Struct], dict[str, str]]:
    """A subclass of the schema's Struct with one attribute per derived field.

    Rules may group or aggregate on derived fields; the enrich stage stores each
    event's derived values in these slots. Their encoded names cannot occur in JSON
    input, so decoding never fills them.
    """
    if not names:
        return struct, {}
    attrs = {name: f"_derived_{i}" for i, name in enumerate(names)}
    rename = {f.name: f.encode_name for f in msgspec.structs.fields(struct)}
    rename.update({attr: _DERIVED_PREFIX + name for name, attr in attrs.items()})
    row = msgspec.defstruct(
        f"{struct.__name__}WithDerived",
        [(attr, Any, None) for attr in attrs.values()],
        bases=(struct,),
        rename=rename,
        omit_defaults=True,  # an event re-encoded before its slots are set leaves them out
    )
    return row, attrs


def _derived_setter(attrs: Mapping[str, str]) -> Callable[[Any, tuple[Any, ...]], None]:
    names = list(attrs.values())

    def set_derived(event: Any, values: tuple[Any, ...]) -> None:
        for attr, value in zip(names, values, strict=True):
            setattr(event, attr, value)

    return set_derived


def _key_encoder(get: Callable[[Any], Any]) -> Callable[[Any], bytes | None]:
    def key(event: Any) -> bytes | None:
        value = get(event)
        if value is None or value is msgspec.UNSET:
            return None
        return value.encode() if isinstance(value, str) else str(value).encode()

    return key


class _RecordingFields(SchemaFields):
    """Schema fields plus derived slots; remembers whether a rule read a derived field."""

    def __init__(self, fields: Mapping[str, Any], extra: Mapping[str, str]) -> None:
        super().__init__(fields, extra)
        self._derived = dict(extra)
        self.extra_used = False

    def access(self, path: str, const: Any, var: str = "e") -> str:
        if path in self._derived:
            self.extra_used = True
        return super().access(path, const, var)
