"""Configuration: one pipeline YAML file, overridden by ``STREAM_*`` environment variables.

Precedence (highest first): environment (``STREAM_BOOTSTRAP_SERVERS``,
``STREAM_TOPICS__INPUT``, ... — nested fields use ``__``), then the YAML file
given with ``--config``, then the defaults below. Settings are frozen once
loaded. Any invalid value fails at start-up with :class:`stream.errors.ConfigError`
naming the field, e.g. ``invalid configuration: commit_interval: Input should be
greater than 0``.

Kafka client settings pass through ``kafka`` (a mapping of librdkafka property
names, e.g. ``{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}``);
secrets belong in the environment (``STREAM_SASL_PASSWORD``) and are never
printed: :func:`Settings.redacted` masks them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stream.errors import ConfigError
from stream.pipeline_spec import (
    DeriveSpec,
    EventTimeSpec,
    JoinSpec,
    RecordFormat,
    SchemaRegistrySpec,
    SubjectStrategyName,
    UserStageSpec,
    check_joins,
)
from stream.pipelines import DEFAULT_PIPELINE
from stream.windows.spec import DEFAULT_RULES, RuleSpec, config_error

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TopicsConfig(BaseModel):
    """Topic names. The changelog defaults to ``<group_id>-window-state-changelog``."""

    model_config = _FROZEN
    input: str = "events"
    enriched: str = "events.enriched"
    correlations: str = "events.correlations"
    dlq: str = "events.dlq"
    reference: str = "reference.services"
    changelog: str | None = None
    #: Late events (``correlate.late_policy: topic``); default ``<input>.late``.
    late: str | None = None


class ValidationConfig(BaseModel):
    """Input contract limits applied by the validate stage."""

    model_config = _FROZEN
    #: Records larger than this go to the DLQ as ``too_large``.
    max_event_bytes: int = Field(default=64 * 1024, gt=0)
    #: Event times further than this in the future are ``bad_timestamp`` (clock skew allowance).
    max_future_ms: int = Field(default=24 * 3600 * 1000, ge=0)
    #: Event times before this epoch-ms value are ``bad_timestamp`` (default 2000-01-01).
    min_event_time_ms: int = 946_684_800_000


class EnrichConfig(BaseModel):
    """Settings of the pipeline's ``reference_join`` (the bundled pipeline's service lookup).

    The form pipeline files had before joins were declared (``enrich:`` as a mapping,
    ``STREAM_ENRICH__*``); kept so those files and environments work unchanged. A
    pipeline with its own ``enrich:`` list configures each join there instead.
    """

    model_config = _FROZEN
    #: Where reference data comes from: the compacted topic, or PostgreSQL (connectors).
    reference_source: Literal["topic", "postgres"] = "topic"
    postgres_dsn: SecretStr | None = None
    postgres_table: str = "reference_services"
    refresh_interval: float = Field(default=30.0, gt=0)
    #: While the reference lookup's breaker is open: pass events marked degraded, or pause.
    on_lookup_failure: Literal["degrade", "pause"] = "degrade"


class CorrelateConfig(BaseModel):
    """Window engine settings and the rule set (see README "Correlation rules")."""

    model_config = _FROZEN
    rules: tuple[RuleSpec, ...] = Field(default_factory=lambda: tuple(DEFAULT_RULES))
    allowed_lateness_ms: int = Field(default=0, ge=0)
    idle_timeout_ms: int = Field(default=30_000, gt=0)
    #: Where events that arrive after their window closed go: ``topic`` (their own
    #: topic, ``topics.late``), ``drop`` (counted only) or ``dlq`` (as before).
    late_policy: Literal["topic", "drop", "dlq"] = "topic"
    max_keys: int = Field(default=1_000_000, gt=0)
    sample_size: int = Field(default=5, ge=0, le=100)


class Settings(BaseSettings):
    """Everything a worker needs. Field docs name the environment variable."""

    model_config = SettingsConfigDict(
        env_prefix="STREAM_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    #: ``STREAM_BOOTSTRAP_SERVERS``: Kafka bootstrap servers.
    bootstrap_servers: str = "127.0.0.1:9092"
    #: ``STREAM_GROUP_ID``: consumer group of the workers (one group per pipeline).
    group_id: str = "stream-workers"
    #: ``STREAM_APP_ID``: Faust application id (its own internal topics use it as prefix).
    app_id: str = "stream"
    #: ``STREAM_PROCESSING_GUARANTEE``: at_least_once, or exactly_once (Kafka transactions).
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    #: ``STREAM_MAX_BATCH``: records taken from the consumer per batch.
    max_batch: int = Field(default=10_000, gt=0, le=1_000_000)
    #: ``STREAM_COMMIT_INTERVAL``: seconds between checkpoints.
    commit_interval: float = Field(default=1.0, gt=0)
    #: ``STREAM_COMMIT_EVERY``: checkpoint after this many records, interval or not.
    commit_every: int = Field(default=200_000, gt=0)
    #: ``STREAM_MAX_INFLIGHT_BATCHES``: batches fetched and not yet through the whole chain
    #: (memory: at most this many times ``max_batch`` records held by the worker).
    max_inflight_batches: int = Field(default=4, gt=0)
    #: ``STREAM_SHUTDOWN_GRACE``: seconds to finish, flush and commit on SIGTERM (below k8s' 30 s).
    shutdown_grace: float = Field(default=25.0, gt=0)
    #: ``STREAM_STALL_TIMEOUT``: seconds a link of the chain (a stage, a lookup) may run,
    #: or the poll loop stay silent, before /health reports the worker stalled (503) and
    #: the liveness probe restarts it. Above the slowest call a stage legitimately makes.
    stall_timeout: float = Field(default=15.0, gt=0)
    #: ``STREAM_WEB_PORT`` / ``STREAM_WEB_HOST``: /metrics, /health, /ready.
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_host: str = "0.0.0.0"
    #: ``STREAM_LOG_FORMAT``: json in containers, text on a terminal (auto picks by TTY).
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``STREAM_GROUP_INSTANCE_ID``: static membership for rolling restarts (optional).
    group_instance_id: str | None = None
    #: ``STREAM_GROUP_PROTOCOL``: ``classic`` (client-side cooperative-sticky, 1 s heartbeats)
    #: or ``consumer`` (KIP-848: assignment, session timeout and heartbeat on the broker;
    #: Kafka 4.x). Classic settled and resumed faster here: README "Scaling behaviour".
    group_protocol: Literal["classic", "consumer"] = "classic"
    #: ``STREAM_SASL_USERNAME`` / ``STREAM_SASL_PASSWORD``: broker credentials (never logged).
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: Extra librdkafka properties for every client (security.protocol, ssl.*, ...).
    kafka: dict[str, str] = Field(default_factory=dict)
    #: ``STREAM_TRACING``: OpenTelemetry spans per batch (sampled); off costs nothing.
    tracing: bool = False
    tracing_sample_ratio: float = Field(default=0.01, ge=0.0, le=1.0)

    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    enrich: EnrichConfig = Field(default_factory=EnrichConfig)
    correlate: CorrelateConfig = Field(default_factory=CorrelateConfig)

    # -- the pipeline's shape (README "Pipeline files"); defaults: the bundled pipeline -------
    #: Pipeline name: the ``stream.pipeline`` lineage header and the default group id.
    pipeline: str = Field(default="observability", pattern=r"^[A-Za-z0-9._-]+$")
    #: The field identifying an event (correlation samples); none: no samples.
    event_id: str | None = None
    event_time: EventTimeSpec | None = None
    #: Field whose value keys the output records (default: the input record's key).
    key: str | None = None
    #: JSON Schema file (absolute, or relative to the pipeline file).
    schema_file: str | None = None
    #: The schema inline (YAML key ``schema``).
    schema_inline: dict[str, Any] | None = None
    #: Enrichment lookups (YAML key ``enrich`` as a list).
    joins: tuple[JoinSpec, ...] = ()
    derive: DeriveSpec = Field(default_factory=dict)
    #: Stages of your own (``stream.stages.user``), in order after validate or enrich.
    stages: tuple[UserStageSpec, ...] = ()
    #: Lineage headers on enriched records (README "Lineage"): ``input`` (the input
    #: position), ``full`` (also the pipeline and its digest) or ``off``. Headers cost CPU
    #: per record; DLQ, correlation and extra records always carry full lineage.
    lineage: Literal["full", "input", "off"] = "input"
    #: The join that ``enrich:`` as a mapping and ``topics.reference`` configure (upgrade path).
    reference_join: str | None = None
    # -- record formats (README "Schema Registry") --------------------------------------------
    #: ``STREAM_FORMAT``: input values: ``json`` (no decoder), or Confluent-framed
    #: ``avro`` / ``protobuf`` / ``json_schema`` read through the schema registry.
    format: RecordFormat = "json"
    #: The schema registry (Confluent-compatible API base URL, basic-auth variable).
    schema_registry: SchemaRegistrySpec = Field(default_factory=SchemaRegistrySpec)
    #: ``STREAM_SCHEMA_REGISTRY_URL``: overrides ``schema_registry.url``.
    schema_registry_url: str | None = None
    #: Enriched and correlation records: ``json``, or ``avro`` / ``protobuf`` /
    #: ``json_schema`` (registered).
    output_format: Literal["json", "avro", "protobuf", "json_schema"] = "json"
    #: Avro (``.avsc``), Protobuf (``.proto``, its first message) or JSON Schema of the
    #: enriched records (relative to the pipeline file).
    output_schema_file: str | None = None
    #: Output subjects: ``topic`` = ``<topic>-value`` (TopicNameStrategy), ``record`` =
    #: the record's full name (RecordNameStrategy, Avro only).
    output_subject_strategy: SubjectStrategyName = "topic"
    #: Set by the loader: the pipeline file and the content hash of it and its schema (lineage).
    pipeline_file: str | None = None
    pipeline_digest: str = ""
    #: The file digest before :meth:`bind_schema` folded a registry schema into it.
    _file_digest: str | None = PrivateAttr(default=None)

    def bind_schema(self, schema_text: str) -> None:
        """Fold the schema a pipeline took from the registry at start-up
        (``schema: {registry_subject: ...}``) into ``pipeline_digest``.

        The file names only the subject, so without this a new schema version would
        leave the lineage digest unchanged. The one value start-up completes after
        loading (the settings stay frozen for everything else); idempotent for the same
        text, and derived from the file digest each time, never from a previous call.
        """
        if self._file_digest is None:
            self._file_digest = self.pipeline_digest
        h = hashlib.sha256(self._file_digest.encode())
        h.update(b"\0registry schema\0" + schema_text.encode())
        object.__setattr__(self, "pipeline_digest", h.hexdigest()[:16])

    @field_validator("lineage", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @field_validator("joins")
    @classmethod
    def _unique_joins(cls, value: tuple[JoinSpec, ...]) -> tuple[JoinSpec, ...]:
        result: tuple[JoinSpec, ...] = check_joins(value)
        return result

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_empty_bootstrap(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one host:port")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed as init kwargs) so operators can
        # override one field of a ConfigMap without editing it.
        return (env_settings, init_settings, file_secret_settings)

    @property
    def changelog_topic(self) -> str:
        return self.topics.changelog or f"{self.group_id}-window-state-changelog"

    @property
    def late_topic(self) -> str:
        """Where late events go under ``late_policy: topic`` (``<input>.late`` by default)."""
        return self.topics.late or f"{self.topics.input}.late"

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties shared by every client: bootstrap, security, pass-through."""
        conf: dict[str, str] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.kafka)
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        return conf

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets and secret-looking Kafka keys masked."""
        data = self.model_dump(mode="json")
        data["kafka"] = {k: ("***" if _looks_secret(k) else v) for k, v in self.kafka.items()}
        return data


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(
        word in lowered for word in ("password", "secret", "token", "key.pem", "credentials")
    )


#: Keys that make a pipeline file self-contained: without them it is settings (and
#: perhaps rules) on top of the bundled pipeline, as pipeline files were before.
_OWN_SHAPE_KEYS: Final = ("schema", "schema_file")


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load the pipeline file (if any), apply env overrides, validate, freeze.

    A file with its own ``schema``/``schema_file`` describes a whole pipeline; one
    without is layered over the bundled pipeline (``stream/pipelines/observability.yaml``),
    which is also what runs with no file at all. Raises ConfigError naming the file,
    the path inside it and the reason; never a pydantic traceback.
    """
    file = Path(path) if path is not None else None
    data = _read_yaml(file) if file is not None else {}
    own_shape = any(key in data for key in _OWN_SHAPE_KEYS)
    if not own_shape:
        base = _read_yaml(DEFAULT_PIPELINE)
        topics = {**base.pop("topics", {}), **(data.pop("topics", None) or {})}
        data = {**base, **data, "topics": topics}
        source = file or DEFAULT_PIPELINE
        data["schema_file"] = str(DEFAULT_PIPELINE.parent / base["schema_file"])
    else:
        assert file is not None
        source = file
        if "pipeline" in data and "group_id" not in data:
            data["group_id"] = data["pipeline"]
    if isinstance(data.get("enrich"), list):
        # YAML 1.1 reads a bare ``on:`` key as the boolean True.
        data["joins"] = [
            {("on" if k is True else k): v for k, v in join.items()}
            if isinstance(join, dict)
            else join
            for join in data.pop("enrich")
        ]
    if "schema" in data:
        data["schema_inline"] = data.pop("schema")
    # The issue-tracker shape puts ``rules:`` at the top level; it belongs to ``correlate``.
    if "rules" in data:
        correlate = dict(data.get("correlate") or {})
        correlate["rules"] = data.pop("rules")
        data["correlate"] = correlate
    if own_shape:
        # A pipeline of its own shape has no rules unless it declares them (the bundled
        # pipeline's default rule names fields only that shape has).
        correlate = dict(data.get("correlate") or {})
        correlate.setdefault("rules", [])
        data["correlate"] = correlate
    if data.get("schema_file") and not Path(data["schema_file"]).is_absolute():
        data["schema_file"] = str(source.parent / data["schema_file"])
    data["pipeline_file"] = str(source)
    data["pipeline_digest"] = _digest(source, data.get("schema_file"))
    data.update(overrides)
    try:
        return Settings(**data)
    except PydanticValidationError as exc:
        raise config_error(exc).in_file(str(source)) from None


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{file} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("--config", f"{file} must contain a mapping at the top level")
    return loaded


def _digest(pipeline_file: Path, schema_file: str | None) -> str:
    """Content hash of the pipeline file and its schema file (the lineage header)."""
    h = hashlib.sha256()
    for file in (pipeline_file, Path(schema_file) if schema_file else None):
        if file is not None:
            with contextlib.suppress(OSError):
                h.update(file.read_bytes())
    return h.hexdigest()[:16]
