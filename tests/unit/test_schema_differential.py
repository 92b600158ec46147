"""Differential test: the compiled msgspec type decides like ``jsonschema``.

Hypothesis draws schemas from the supported subset and documents that are partly
guided by the schema (so that many are valid) and partly arbitrary JSON (so that
many are not); the compiled decoder's accept/reject must equal
``Draft202012Validator`` with format checking (``rfc3339-validator`` makes it check
``date-time``).

Every document the reference accepts is also changed in one place at a time (a
property or element removed or set to null, an absent property added as null), so
``required``, UNSET-versus-null and each nested keyword are tested on their own
rather than hidden behind another error in the same document.

Documented divergences are kept out of the drawn data rather than hidden in the
comparison: numbers with a zero fraction (``1.0`` is an integer to JSON Schema, a
float to msgspec), leap seconds, lowercase ``t``/``z`` and a space separator in
date-times (rfc3339-validator and msgspec disagree there, and neither is the
reference), ``$`` in patterns (jsonschema uses Python's ``re`` as is, we translate
to ECMA semantics) and non-ASCII digits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import msgspec
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from stream.schema import SchemaError, compile_type

NAMES = ["a", "b", "qty", "class", "order-id", "2fa", "x y"]
PATTERNS = ["^[a-c]+", "b", "^\\d", "[0-9]{2}", "^(ab|c)*x?"]
DATETIMES = [
    "2024-02-29T10:00:00Z",
    "2024-02-29T10:00:00.123+05:30",
    "2023-12-31T23:59:59-08:00",
    "2023-02-29T10:00:00Z",  # no such day
    "2024-01-01T10:00:00",  # no offset
    "2024-01-01",
    "10:00:00Z",
    "2024-13-01T00:00:00Z",
]
TEXT = st.one_of(
    st.text(alphabet="abcx0129-", max_size=6),
    st.sampled_from(DATETIMES),
)
NUMBERS = st.one_of(
    st.integers(-6, 6),
    st.sampled_from([-2.5, -0.5, 0.25, 1.5, 3.75, 1e-3]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)
    ),
    max_leaves=6,
)


def _bounds(draw: st.DrawFn, schema: dict[str, Any]) -> None:
    for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if draw(st.booleans()):
            schema[keyword] = draw(NUMBERS)


@st.composite
def leaf_schemas(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "null", "enum"]))
    schema: dict[str, Any] = {"type": kind}
    if kind == "string":
        if draw(st.booleans()):
            schema["format"] = "date-time"
        else:
            if draw(st.booleans()):
                schema["minLength"] = draw(st.integers(0, 3))
            if draw(st.booleans()):
                schema["maxLength"] = draw(st.integers(0, 5))
            if draw(st.booleans()):
                schema["pattern"] = draw(st.sampled_from(PATTERNS))
    elif kind in ("integer", "number"):
        _bounds(draw, schema)
    elif kind == "enum":
        values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from("abc"))
        del schema["type"]
        if draw(st.booleans()):
            schema["const"] = draw(values)
        else:
            schema["enum"] = draw(st.lists(values, min_size=1, max_size=4, unique=True))
        if draw(st.booleans()):
            schema["type"] = draw(st.sampled_from(["string", "integer", ["string", "null"]]))
    if kind != "enum" and draw(st.booleans()) and draw(st.booleans()):
        schema["type"] = [kind, "null"] if kind != "null" else ["null", "string"]
    return schema


def _containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        if draw(st.booleans()):
            schema: dict[str, Any] = {"type": "array", "items": draw(children)}
            if draw(st.booleans()):
                schema["minItems"] = draw(st.integers(0, 2))
            if draw(st.booleans()):
                schema["maxItems"] = draw(st.integers(0, 3))
            return schema
        if draw(st.integers(0, 5)) == 0:
            return {"type": "object", "additionalProperties": draw(children)}
        names = draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True))
        schema = {"type": "object", "properties": {n: draw(children) for n in names}}
        if names:
            schema["required"] = draw(st.lists(st.sampled_from(names), unique=True))
        if draw(st.booleans()):
            schema["additionalProperties"] = draw(st.booleans())
        if draw(st.integers(0, 4)) == 0:
            schema["type"] = ["object", "null"]
        for name, sub in schema["properties"].items():
            if "type" in sub and draw(st.integers(0, 5)) == 0:
                sub["default"] = draw(guided_values(sub))
                if name in schema.get("required", []):
                    schema["required"].remove(name)
        return schema

    return build()


SCHEMAS = st.recursive(leaf_schemas(), _containers, max_leaves=6)


def guided_values(schema: Any) -> st.SearchStrategy[Any]:
    """Values shaped like ``schema`` (often valid), mixed with arbitrary JSON."""
    if not isinstance(schema, dict):
        return JSON_VALUES
    if "const" in schema:
        return st.one_of(st.just(schema["const"]), SCALARS)
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), SCALARS)
    types = schema.get("type")
    first = types[0] if isinstance(types, list) else types
    if first == "object" and "properties" in schema:
        properties = schema["properties"]
        required = schema.get("required", [])
        optional = [n for n in properties if n not in required]
        # null is drawn often on purpose: an optional property that is not nullable must
        # reject it (UNSET is the absent marker, not None)
        return st.fixed_dictionaries(
            {n: guided_values(properties[n]) for n in required},
            optional={n: guided_values(properties[n]) | st.none() for n in optional},
        ) | st.dictionaries(st.sampled_from(NAMES), JSON_VALUES, max_size=2)
    if first == "object":
        inner = guided_values(schema.get("additionalProperties", True))
        return st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)
    if first == "array":
        return st.lists(guided_values(schema.get("items", True)), max_size=4)
    if first == "string":
        return TEXT
    if first in ("integer", "number"):
        return NUMBERS
    return SCALARS


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[Any]]:
    schema = draw(st.one_of(SCHEMAS, _containers(SCHEMAS)))  # events are objects: more of them
    docs = draw(st.lists(st.one_of(guided_values(schema), JSON_VALUES), min_size=4, max_size=8))
    return schema, docs


def _compiled_accepts(decoder: msgspec.json.Decoder[Any], doc: Any) -> bool:
    try:
        decoder.decode(json.dumps(doc).encode())
    except msgspec.ValidationError:
        return False
    return True


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_decoder_decides_like_jsonschema(case: tuple[dict[str, Any], list[Any]]) -> None:
    schema, docs = case
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    try:
        decoder = msgspec.json.Decoder(compile_type(schema, source="hypothesis"))
    except SchemaError as exc:
        # Refusals by design, not failures: an enum/const no value can satisfy (the
        # schema accepts nothing) and a default that does not match its own schema.
        if exc.keyword in ("enum", "const", "default"):
            reject()
        raise
    for doc in docs:
        expected = validator.is_valid(doc)
        assert _compiled_accepts(decoder, doc) == expected, (schema, doc, expected)
        if expected:  # a valid document changed in one place tests each keyword alone
            for variant in _one_change(doc):
                expected = validator.is_valid(variant)
                assert _compiled_accepts(decoder, variant) == expected, (schema, variant, expected)


def _one_change(doc: Any, depth: int = 0) -> Iterator[Any]:
    """``doc`` with one thing changed: a property or element removed, set to null, or
    (inside it) changed the same way; absent property names added as null."""
    if depth > 3:
        return
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield {k: v for k, v in doc.items() if k != key}
            yield {**doc, key: None}
            for inner in _one_change(value, depth + 1):
                yield {**doc, key: inner}
        for name in NAMES:
            if name not in doc:
                yield {**doc, name: None}
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield doc[:i] + doc[i + 1 :]
            yield [*doc[:i], None, *doc[i + 1 :]]
            for inner in _one_change(value, depth + 1):
                yield [*doc[:i], inner, *doc[i + 1 :]]


def test_the_reference_checks_date_time() -> None:
    """Without rfc3339-validator jsonschema would accept any string as a date-time."""
    validator = jsonschema.Draft202012Validator(
        {"format": "date-time"}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert not validator.is_valid("2024-01-01T10:00:00")
    assert validator.is_valid("2024-01-01T10:00:00Z")
