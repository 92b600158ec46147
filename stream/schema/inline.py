"""The YAML inline schema form, translated to a JSON Schema document.

Pipeline files may describe the event in place instead of naming a file::

    schema:
      order_id: {type: string, required: true, min_length: 1}
      qty: {type: integer, minimum: 1}
      shipping: {type: object, properties: {country: {type: string, required: true}}}

Keys are the JSON Schema keywords, also in snake_case (``min_length``,
``exclusive_minimum``, ``additional_properties``, ...), and a property may say
``required: true``. The translation produces an ordinary JSON Schema document, so
the inline form supports exactly what :func:`compile_json_schema` supports and its
errors carry the pointer into that document (``/properties/qty``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream.schema.compiler import compile_json_schema
from stream.schema.errors import SchemaError
from stream.schema.model import CompiledSchema

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

#: snake_case spelling -> JSON Schema keyword
SNAKE_KEYWORDS = {
    "min_length": "minLength",
    "max_length": "maxLength",
    "min_items": "minItems",
    "max_items": "maxItems",
    "exclusive_minimum": "exclusiveMinimum",
    "exclusive_maximum": "exclusiveMaximum",
    "additional_properties": "additionalProperties",
    "multiple_of": "multipleOf",
    "unique_items": "uniqueItems",
    "min_properties": "minProperties",
    "max_properties": "maxProperties",
    "pattern_properties": "patternProperties",
    "prefix_items": "prefixItems",
    "read_only": "readOnly",
    "write_only": "writeOnly",
}


def compile_inline_schema(spec: Mapping[str, Any], *, source: str) -> CompiledSchema:
    """Compile the inline form ``{property: {keyword: value, required: bool}}``."""
    return compile_json_schema(inline_to_json_schema(spec, source=source), source=source)


def inline_to_json_schema(spec: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The JSON Schema document the inline form stands for."""
    if not isinstance(spec, Mapping):
        raise SchemaError(source, "", None, "the inline schema must map property names to specs")
    doc: dict[str, Any] = {"$schema": DRAFT_2020_12, "type": "object"}
    doc.update(_properties(spec, "/properties", source))
    return doc


def _properties(spec: Mapping[str, Any], pointer: str, source: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, prop in spec.items():
        name = str(name)
        where = f"{pointer}/{name}"
        if not isinstance(prop, Mapping):
            raise SchemaError(
                source, where, None, f"property {name!r} needs a mapping like {{type: string}}"
            )
        flag = prop.get("required", False)
        if flag is True:
            required.append(name)
        elif flag is not False and not isinstance(flag, list):
            raise SchemaError(source, where, "required", "must be true or false")
        properties[name] = _subschema(prop, where, source, nested_required=flag)
    out: dict[str, Any] = {"properties": properties}
    if required:
        out["required"] = required
    return out


def _subschema(
    prop: Mapping[str, Any], pointer: str, source: str, *, nested_required: Any = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in prop.items():
        keyword = SNAKE_KEYWORDS.get(key, key)
        if keyword == "required":
            if isinstance(value, list):
                out["required"] = value  # JSON Schema spelling on a nested object
            continue
        if keyword == "properties" and isinstance(value, Mapping):
            nested = _properties(value, f"{pointer}/properties", source)
            out["properties"] = nested["properties"]
            if "required" in nested:
                out["required"] = [*out.get("required", []), *nested["required"]]
        elif keyword == "items" and isinstance(value, Mapping):
            out["items"] = _subschema(value, f"{pointer}/items", source)
        elif keyword == "additionalProperties" and isinstance(value, Mapping):
            out[keyword] = _subschema(value, f"{pointer}/additionalProperties", source)
        else:
            out[keyword] = value
    if isinstance(nested_required, list):
        out["required"] = [*out.get("required", []), *nested_required]
    return out
