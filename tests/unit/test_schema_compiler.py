"""The JSON Schema -> msgspec compiler: keywords, refusals, names, UNSET, FieldInfo, files."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stream.errors import ConfigError
from stream.schema import (
    CompiledSchema,
    FieldInfo,
    SchemaError,
    compile_inline_schema,
    compile_json_schema,
    compile_type,
    inline_to_json_schema,
    load_schema_file,
)
from stream.schema.names import assign_attrs, safe_attr
from stream.schema.patterns import ecma_to_python

ORDERS: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "order events",
    "type": "object",
    "required": ["order-id", "items", "created_at"],
    "properties": {
        "order-id": {"type": "string", "minLength": 1},
        "class": {"type": "string", "enum": ["standard", "express", "overnight"]},
        "created_at": {"type": "string", "format": "date-time"},
        "note": {"type": ["string", "null"]},
        "currency": {"type": "string", "default": "EUR"},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                },
            },
        },
        "shipping": {
            "type": "object",
            "required": ["country"],
            "additionalProperties": False,
            "properties": {
                "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
            },
        },
    },
}
VALID = {
    "order-id": "o-1",
    "created_at": "2026-12-02T10:00:00+01:00",
    "items": [{"sku": "a", "qty": 2}],
}


def orders() -> CompiledSchema:
    return compile_json_schema(ORDERS, source="orders.schema.json")


def decode(schema: CompiledSchema, doc: Any) -> Any:
    return schema.decoder.decode(json.dumps(doc).encode())


def rejection(schema: CompiledSchema | Any, doc: Any) -> str:
    decoder = schema.decoder if isinstance(schema, CompiledSchema) else msgspec.json.Decoder(schema)
    with pytest.raises(msgspec.ValidationError) as info:
        decoder.decode(json.dumps(doc).encode())
    return str(info.value)


def accepts(schema: dict[str, Any], doc: Any) -> bool:
    decoder = msgspec.json.Decoder(compile_type(schema, source="t"))
    try:
        decoder.decode(json.dumps(doc).encode())
    except msgspec.ValidationError:
        return False
    return True


def refusal(schema: Any, source: str = "s.json") -> SchemaError:
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, source=source)
    return info.value


# -- the decoded value -------------------------------------------------------------------


def test_a_valid_order_decodes_to_structs_with_typed_values() -> None:
    event = decode(orders(), VALID | {"shipping": {"country": "DE"}})
    assert isinstance(event, msgspec.Struct)
    assert event.order_id == "o-1"
    assert event.created_at == datetime.datetime(
        2026, 12, 2, 9, 0, tzinfo=datetime.UTC
    ) and isinstance(event.created_at, datetime.datetime)
    assert event.items[0].qty == 2 and event.items[0].sku == "a"
    assert event.shipping.country == "DE"
    assert event.shipping.address is msgspec.UNSET
    assert event.currency == "EUR"  # default instead of UNSET


def test_structs_are_untracked_by_the_garbage_collector() -> None:
    compiled = orders()
    event = decode(compiled, VALID | {"shipping": {"country": "DE"}})
    assert compiled.struct.__struct_config__.gc is False
    assert type(event.items[0]).__struct_config__.gc is False
    assert type(event.shipping).__struct_config__.gc is False


def test_rejections_name_the_json_path_with_json_names() -> None:
    compiled = orders()
    assert rejection(compiled, VALID | {"items": [{"sku": "a", "qty": 0}]}) == (
        "Expected `int` >= 1 - at `$.items[0].qty`"
    )
    assert rejection(compiled, VALID | {"order-id": ""}) == (
        "Expected `str` of length >= 1 - at `$.order-id`"
    )
    assert rejection(compiled, {k: v for k, v in VALID.items() if k != "order-id"}) == (
        "Object missing required field `order-id`"
    )
    assert rejection(compiled, VALID | {"class": "slow"}) == (
        "Invalid enum value 'slow' - at `$.class`"
    )


# -- UNSET and null ---------------------------------------------------------------------


def test_absent_optional_is_unset_and_null_is_rejected_unless_nullable() -> None:
    compiled = orders()
    event = decode(compiled, VALID)
    assert event.class_ is msgspec.UNSET
    assert event.note is msgspec.UNSET
    assert event.shipping is msgspec.UNSET
    assert (
        rejection(compiled, VALID | {"class": None}) == "Expected `str`, got `null` - at `$.class`"
    )
    assert "got `null` - at `$.shipping`" in rejection(compiled, VALID | {"shipping": None})
    assert decode(compiled, VALID | {"note": None}).note is None
    assert decode(compiled, VALID | {"note": "x"}).note == "x"


def test_required_nullable_accepts_null_but_not_absence() -> None:
    schema = {
        "type": "object",
        "required": ["a"],
        "properties": {"a": {"type": ["integer", "null"]}},
    }
    assert accepts(schema, {"a": None})
    assert not accepts(schema, {})


# -- keywords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "string"}, ["", "x"], [1, None, True, [], {}]),
        ({"type": "integer"}, [0, -7, 10**20], [1.5, "1", True, None]),
        ({"type": "number"}, [1, 1.5, -2], ["1", True, None]),
        ({"type": "boolean"}, [True, False], [0, "true", None]),
        ({"type": "null"}, [None], [0, "", False]),
        ({"type": "array"}, [[], [1, "a"]], [{}, "x"]),
        ({"type": "object"}, [{}, {"a": 1}], [[], "x", None]),
        ({"type": ["string", "integer"]}, ["a", 3], [1.5, None]),
        ({"minLength": 2}, ["ab", 1, None, []], ["a"]),  # no type: every JSON type
        ({"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "abc", "äöü"], ["a", "abcd"]),
        ({"type": "string", "pattern": "b"}, ["abc", "b"], ["ac"]),
        ({"type": "string", "pattern": "^a$"}, ["a"], ["a\n", "ba"]),
        ({"type": "string", "pattern": "^\\d+$"}, ["123"], ["١٢٣", "12a"]),
        ({"type": "integer", "minimum": 1, "maximum": 3}, [1, 3], [0, 4]),
        ({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3}, [2], [1, 3]),
        ({"type": "integer", "minimum": 1.5, "maximum": 3.5}, [2, 3], [1, 4]),
        ({"type": "number", "exclusiveMinimum": 0, "maximum": 1.5}, [0.1, 1, 1.5], [0, -1, 1.6]),
        ({"type": "number", "minimum": 1, "exclusiveMinimum": 1}, [1.01, 2], [1, 1.0]),
        ({"type": "array", "minItems": 1, "maxItems": 2}, [[1], [1, 2]], [[], [1, 2, 3]]),
        ({"type": "array", "items": {"type": "integer"}}, [[], [1, 2]], [[1, "a"], ["a"]]),
        ({"type": "array", "items": False}, [[]], [[1]]),
        ({"enum": ["a", 1, None, True]}, ["a", 1, None, True], ["b", 2, False, 0]),
        ({"type": "string", "enum": ["a", 1]}, ["a"], [1, "b"]),
        ({"enum": ["a", "bb", "ccc"], "maxLength": 2}, ["a", "bb"], ["ccc"]),
        ({"const": "x"}, ["x"], ["y", None]),
        ({"const": 2.0}, [2], [3, "2"]),
        ({"type": "string", "format": "date-time"}, ["2026-01-01T00:00:00Z"], ["2026-01-01"]),
        ({"type": ["string", "null"], "format": "date-time"}, [None], ["2026-01-01T00:00:00"]),
        ({"type": "integer", "format": "date-time"}, [3], ["2026-01-01T00:00:00Z"]),
        ({"type": "object", "additionalProperties": False}, [{}], [{"a": 1}]),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, [{"a": 1}], [{"a": "x"}]),
        ({"type": "object", "additionalProperties": True}, [{"a": "x"}], [[]]),
        (
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]},
            [{"a": 1, "b": None}, {"a": 1, "b": [1], "c": 2}],
            [{"a": 1}, {"b": 1}, {"a": "1", "b": 1}],
        ),
        (
            {"$defs": {"pos": {"type": "integer", "minimum": 1}}, "$ref": "#/$defs/pos"},
            [1],
            [0],
        ),
        (
            {
                "type": "object",
                "$defs": {"pos": {"type": "integer", "minimum": 1}},
                "properties": {"a": {"$ref": "#/$defs/pos"}, "b": {"$ref": "#/$defs/pos"}},
            },
            [{"a": 1, "b": 2}],
            [{"a": 0}, {"b": "x"}],
        ),
        (True, [1, "x", None, {}], []),
    ],
)
def test_keyword(schema: Any, good: list[Any], bad: list[Any]) -> None:
    for doc in good:
        assert accepts(schema, doc), doc
    for doc in bad:
        assert not accepts(schema, doc), doc


def test_integer_rejects_integral_floats_a_documented_divergence() -> None:
    # JSON Schema counts 1.0 as the integer 1; msgspec decodes it as a float.
    assert not accepts({"type": "integer"}, 1.0)
    assert accepts({"type": "number"}, 1.0)


def test_number_keeps_integers_as_int() -> None:
    value = msgspec.json.decode(
        b"12345678901234567890", type=compile_type({"type": "number"}, source="t")
    )
    assert value == 12345678901234567890 and isinstance(value, int)


def test_date_time_must_carry_an_offset_and_decodes_aware() -> None:
    tp = compile_type({"type": "string", "format": "date-time"}, source="t")
    value = msgspec.json.decode(b'"2026-12-02T10:00:00.5-02:00"', type=tp)
    assert value.utcoffset() == datetime.timedelta(hours=-2)
    assert "timezone" in rejection(tp, "2026-12-02T10:00:00")


def test_mutable_defaults_are_fresh_per_record() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
            "geo": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "default": {"x": 1},
            },
        },
    }
    compiled = compile_json_schema(schema, source="t")
    first, second = decode(compiled, {}), decode(compiled, {})
    assert first.tags == ["a"] and first.geo.x == 1
    first.tags.append("b")
    assert second.tags == ["a"] and first.tags is not second.tags
    assert compiled.field("tags").optional == (False,)


def test_pattern_translation_to_python() -> None:
    assert ecma_to_python("^a$") == "^a\\Z"
    assert ecma_to_python("[$]\\$") == "[$]\\$"
    assert ecma_to_python("\\d[\\d.]\\D") == "[0-9][0-9.][^0-9]"


# -- names ------------------------------------------------------------------------------


def test_property_names_that_are_not_identifiers_are_renamed() -> None:
    assert safe_attr("order-id") == "order_id"
    assert safe_attr("class") == "class_"
    assert safe_attr("2fa") == "f_2fa"
    assert safe_attr("__x") == "f___x"
    assert safe_attr("") == "f_"
    assert safe_attr("match") == "match"  # a soft keyword is a fine attribute
    assert assign_attrs(["a-b", "a_b", "a b"]) == {"a-b": "a_b_2", "a_b": "a_b", "a b": "a_b_3"}
    schema = {
        "type": "object",
        "properties": {n: {"type": "integer"} for n in ("a-b", "a_b", "class", "2fa")},
    }
    compiled = compile_json_schema(schema, source="t")
    event = decode(compiled, {"a-b": 1, "a_b": 2, "class": 3, "2fa": 4})
    assert (event.a_b_2, event.a_b, event.class_, event.f_2fa) == (1, 2, 3, 4)
    assert json.loads(msgspec.json.encode(event)) == {"a-b": 1, "a_b": 2, "class": 3, "2fa": 4}
    assert rejection(compiled, {"2fa": "x"}) == "Expected `int`, got `str` - at `$.2fa`"
    assert compiled.field("a-b").attrs == ("a_b_2",)


# -- FieldInfo --------------------------------------------------------------------------


def test_field_infos_describe_every_property_path() -> None:
    fields = orders().fields
    assert set(fields) == {
        "order-id",
        "class",
        "created_at",
        "note",
        "currency",
        "items",
        "shipping",
        "shipping.country",
        "shipping.address",
        "shipping.address.zip",
    }  # never into arrays: no items.qty
    assert fields["order-id"] == FieldInfo(
        "order-id", ("order_id",), (False,), frozenset({"string"}), None, None
    )
    assert fields["class"] == FieldInfo(
        "class",
        ("class_",),
        (True,),
        frozenset({"string"}),
        ("standard", "express", "overnight"),
        None,
    )
    assert fields["created_at"].format == "date-time"
    assert fields["note"].types == frozenset({"string", "null"})
    assert fields["note"].optional == (True,)
    assert fields["shipping.country"] == FieldInfo(
        "shipping.country",
        ("shipping", "country"),
        (True, False),
        frozenset({"string"}),
        None,
        None,
    )
    assert fields["shipping.address.zip"].optional == (True, True, True)
    assert orders().required == frozenset({"order-id", "items", "created_at"})


def test_field_info_types_enum_and_const() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "number"},
            "level": {"enum": ["low", "high", None]},
            "v": {"const": 3},
        },
    }
    fields = compile_json_schema(schema, source="t").fields
    assert fields["n"].types == frozenset({"number", "integer"})
    assert fields["level"].enum == ("low", "high", None)
    assert fields["level"].types == frozenset({"string", "null"})
    assert fields["level"].optional == (True,)
    assert fields["v"].enum == (3,)


def test_unknown_field_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown field 'nope'; known: class, created_at, currency"
    ):
        orders().field("nope")


# -- refusals ---------------------------------------------------------------------------


def test_unsupported_keyword_names_pointer_and_keyword() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"qty": {"multipleOf": 2}}},
            }
        },
    }
    error = refusal(schema, source="orders.schema.json")
    assert isinstance(error, ConfigError)
    assert error.pointer == "/properties/items/items/properties/qty"
    assert error.keyword == "multipleOf"
    assert str(error) == (
        "invalid configuration: schema orders.schema.json: "
        "/properties/items/items/properties/qty: keyword 'multipleOf' is not supported"
    )


@pytest.mark.parametrize(
    ("schema", "pointer", "keyword", "text"),
    [
        ({"type": "array"}, "", "type", "top level must be type 'object'"),
        ({"type": ["object", "null"]}, "", "type", "top level must be type 'object'"),
        ({"properties": {"a": {"anyOf": []}}}, "/properties/a", "anyOf", "not supported"),
        ({"properties": {"a": {"format": "email"}}}, "/properties/a", "format", "'email'"),
        ({"properties": {"a": {"type": "strin"}}}, "/properties/a", "type", "unknown type"),
        ({"properties": {"a/b": {"not": {}}}}, "/properties/a~1b", "not", "not supported"),
        ({"properties": {"a": {"pattern": "("}}}, "/properties/a", "pattern", "invalid regular"),
        (
            {"properties": {"a": {"type": "string", "format": "date-time", "maxLength": 30}}},
            "/properties/a",
            "maxLength",
            "cannot be combined with format 'date-time'",
        ),
        ({"properties": {"a": {"items": [{}]}}}, "/properties/a", "items", "prefixItems"),
        (
            {"properties": {"a": {"properties": {"b": {}}, "additionalProperties": {}}}},
            None,
            None,
            None,
        ),
        (
            {
                "properties": {
                    "a": {"properties": {"b": {}}, "additionalProperties": {"type": "string"}}
                }
            },
            "/properties/a",
            "additionalProperties",
            "only supported on a nested object without 'properties'",
        ),
        ({"additionalProperties": {"type": "string"}}, "", "additionalProperties", "nested"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "/properties/a", "$ref", "only local"),
        ({"properties": {"a": {"$ref": "#/$defs/none"}}}, "/properties/a", "$ref", "points to"),
        (
            {"$defs": {"n": {"properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
            "/$defs/n/properties/next",
            "$ref",
            "recursive",
        ),
        (
            {"properties": {"a": {"$ref": "#/$defs/x", "minimum": 1}}, "$defs": {"x": {}}},
            "/properties/a",
            "$ref",
            "only supported alone",
        ),
        ({"properties": {"a": {"enum": [[1]]}}}, "/properties/a", "enum", "array"),
        ({"properties": {"a": {"enum": [1.5]}}}, "/properties/a", "enum", "number"),
        (
            {"properties": {"a": {"type": "string", "const": 1}}},
            "/properties/a",
            "const",
            "no value",
        ),
        (
            {"properties": {"a": {"type": "integer", "default": "x"}}},
            "/properties/a",
            "default",
            "does not match",
        ),
        ({"properties": {"a": False}}, "/properties/a", None, "'false'"),
        ({"properties": {"a": {"minLength": -1}}}, "/properties/a", "minLength", "non-negative"),
        ({"properties": {"a": {"maximum": "3"}}}, "/properties/a", "maximum", "must be a number"),
        ({"enum": [{}]}, "", "enum", "top level"),
    ],
)
def test_refusals(schema: Any, pointer: str | None, keyword: str | None, text: str | None) -> None:
    if pointer is None:  # additionalProperties {} is the same as true: accepted
        compile_json_schema(schema, source="s.json")
        return
    error = refusal(schema)
    assert (error.pointer, error.keyword) == (pointer, keyword)
    assert text is not None and text in str(error)
    assert str(error).startswith(f"invalid configuration: schema s.json: {pointer or '(root)'}: ")


def test_a_schema_that_is_not_an_object_is_refused() -> None:
    assert "must be a JSON object" in str(refusal([1]))


# -- inline form ------------------------------------------------------------------------


def test_inline_form_translates_snake_case_and_required_flags() -> None:
    import yaml

    spec = yaml.safe_load(
        """
        order_id: {type: string, required: true, min_length: 1}
        qty: {type: integer, minimum: 1, exclusive_maximum: 100}
        tags: {type: array, items: {type: string, max_length: 3}, max_items: 2}
        shipping:
          type: object
          additional_properties: false
          properties:
            country: {type: string, required: true, pattern: "^[A-Z]{2}$"}
            zip: {type: string}
        """
    )
    doc = inline_to_json_schema(spec, source="pipeline.yaml")
    assert doc["required"] == ["order_id"]
    assert doc["properties"]["qty"] == {"type": "integer", "minimum": 1, "exclusiveMaximum": 100}
    assert doc["properties"]["tags"] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 3},
        "maxItems": 2,
    }
    assert doc["properties"]["shipping"]["required"] == ["country"]
    assert doc["properties"]["shipping"]["additionalProperties"] is False

    compiled = compile_inline_schema(spec, source="pipeline.yaml")
    assert compiled.required == frozenset({"order_id"})
    assert compiled.field("shipping.country").optional == (True, False)
    event = decode(compiled, {"order_id": "o", "qty": 99, "shipping": {"country": "DE"}})
    assert event.qty == 99
    assert rejection(compiled, {"order_id": "o", "qty": 100}) == "Expected `int` <= 99 - at `$.qty`"
    assert "unknown field `zip2`" in rejection(
        compiled, {"order_id": "o", "shipping": {"country": "DE", "zip2": "1"}}
    )
    assert rejection(compiled, {"order_id": "o", "tags": ["a", "b", "c"]}) == (
        "Expected `array` of length <= 2 - at `$.tags`"
    )


def test_inline_form_errors_point_into_the_translated_document() -> None:
    with pytest.raises(SchemaError) as info:
        compile_inline_schema({"qty": {"type": "integer", "multiple_of": 2}}, source="p.yaml")
    assert (info.value.pointer, info.value.keyword) == ("/properties/qty", "multipleOf")
    with pytest.raises(SchemaError, match="needs a mapping"):
        compile_inline_schema({"qty": "integer"}, source="p.yaml")
    with pytest.raises(SchemaError, match="must be true or false"):
        compile_inline_schema({"qty": {"type": "integer", "required": "yes"}}, source="p.yaml")


# -- files ------------------------------------------------------------------------------


def test_load_schema_file_json_yaml_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "orders.schema.json").write_text(json.dumps(ORDERS))
    (tmp_path / "pipeline.yaml").write_text("schema: orders.schema.json\n")
    compiled = load_schema_file(Path("orders.schema.json"), relative_to=tmp_path / "pipeline.yaml")
    assert compiled.source == "orders.schema.json"
    assert compiled.field("shipping.country").attrs == ("shipping", "country")
    assert load_schema_file(Path("orders.schema.json"), relative_to=tmp_path).fields.keys() == (
        compiled.fields.keys()
    )
    (tmp_path / "s.yaml").write_text("type: object\nproperties: {a: {type: integer}}\n")
    assert decode(load_schema_file(tmp_path / "s.yaml"), {"a": 1}).a == 1


def test_bad_schema_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"schema missing\.json: \(root\): cannot read"):
        load_schema_file(Path("missing.json"), relative_to=tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SchemaError, match=r"schema broken\.json: .*is not valid JSON"):
        load_schema_file(Path("broken.json"), relative_to=tmp_path)
    (tmp_path / "broken.yaml").write_text("a: [")
    with pytest.raises(SchemaError, match="is not valid YAML"):
        load_schema_file(tmp_path / "broken.yaml")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SchemaError, match="must be a JSON object"):
        load_schema_file(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text(json.dumps({"properties": {"a": {"oneOf": []}}}))
    with pytest.raises(SchemaError) as info:
        load_schema_file(tmp_path / "bad.json")
    assert info.value.source == str(tmp_path / "bad.json")
    assert (info.value.pointer, info.value.keyword) == ("/properties/a", "oneOf")
