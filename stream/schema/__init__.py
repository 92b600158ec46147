"""User event schemas: JSON Schema compiled to msgspec Structs, plus inference.

::

    errors     SchemaError (a ConfigError naming file, JSON pointer and keyword)
    model      CompiledSchema (struct, decoder, fields) and FieldInfo
    compiler   JSON Schema 2020-12 subset -> msgspec types (one C pass per record)
    inline     the YAML inline form -> a JSON Schema document
    loader     schema files (JSON or YAML) relative to the pipeline file
    names      safe attribute names + rename for any JSON property name
    patterns   ECMA-262 ``pattern`` -> Python ``re``
    infer      a schema from sample records (``stream schema infer``)
    check      per-field completeness/validity of records (``stream schema check``)
"""

from __future__ import annotations

from stream.schema.compiler import compile_json_schema, compile_type
from stream.schema.errors import SchemaError
from stream.schema.inline import compile_inline_schema, inline_to_json_schema
from stream.schema.loader import load_schema_file
from stream.schema.model import CompiledSchema, FieldInfo

__all__ = [
    "CompiledSchema",
    "FieldInfo",
    "SchemaError",
    "compile_inline_schema",
    "compile_json_schema",
    "compile_type",
    "inline_to_json_schema",
    "load_schema_file",
]
