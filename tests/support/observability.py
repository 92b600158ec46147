"""The bundled observability pipeline's stages, built the way the worker builds them.

Unit tests of the stages use these instead of constructing stages by hand, so they
run the schema, joins and derived fields of ``stream/pipelines/observability.yaml``.
"""

from __future__ import annotations

from typing import Any

from stream.config import load_settings
from stream.fieldpaths import SchemaFields
from stream.pipeline import Stages, build_stages, compile_schema
from stream.stages.correlate import Correlator
from stream.stages.enrich import Breaker, Enricher, ReferenceLookup, ReferenceTable
from stream.stages.validate import Validator

SETTINGS = load_settings()
SCHEMA = compile_schema(SETTINGS)
#: Field resolver of the bundled schema (rules compiled against it).
FIELDS = SchemaFields(SCHEMA.fields)


def stages(
    lookup: ReferenceLookup | None = None, breaker: Breaker | None = None, **overrides: Any
) -> Stages:
    settings = SETTINGS.model_copy(update=overrides) if overrides else SETTINGS
    breakers = {"service": breaker} if breaker is not None else {}
    return build_stages(settings, {"service": lookup or ReferenceTable()}, breakers)


def validator(clock: Any = None, **limits: Any) -> Validator:
    """The bundled pipeline's validate stage with other limits (``ValidationConfig``) or clock."""
    validation = SETTINGS.validation.model_copy(update=limits)
    built = stages(validation=validation).validator
    if clock is not None:
        built._clock = clock
    return built


def enricher(lookup: ReferenceLookup, breaker: Breaker | None = None) -> Enricher:
    return stages(lookup, breaker).enricher


def correlator(rules: Any, **options: Any) -> Correlator:
    return Correlator(rules, fields=FIELDS, **options)
