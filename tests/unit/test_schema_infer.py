"""Schema inference from sample records, and the per-field check (no broker)."""

from __future__ import annotations

import io
import json
from typing import Any

import msgspec
import pytest

from stream.commands.schema import ProgressBar
from stream.schema import compile_json_schema
from stream.schema.check import SchemaCheck, field_types, reason_key
from stream.schema.infer import SchemaInferrer, is_date_time


def order(i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "order_id": f"o-{i}",
        "currency": ["EUR", "USD", "GBP"][i % 3],
        "total": 10 + i * 0.5 if i % 2 else 10 + i,
        "created_at": f"2026-12-02T10:{i % 60:02d}:00Z",
        "shipping": {"country": "DE", "zip": f"{10000 + i}"},
        "items": [{"sku": f"s{i}", "qty": 1 + i % 4}],
        "express": i % 5 == 0,
    }
    if i % 10 == 0:
        doc["coupon"] = None if i % 20 == 0 else "SAVE"
    if i % 3 == 0:
        doc["shipping"]["note"] = "leave at door"
    return doc


def infer(records: list[Any], **options: Any) -> dict[str, Any]:
    inferrer = SchemaInferrer(**options)
    inferrer.add_all(records)
    return inferrer.schema()


def test_types_required_enum_date_time_nested_and_items() -> None:
    schema = infer([order(i) for i in range(200)])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    props = schema["properties"]
    assert list(props) == [
        "order_id",
        "currency",
        "total",
        "created_at",
        "shipping",
        "items",
        "express",
        "coupon",
    ]
    assert props["order_id"] == {"type": "string"}  # 200 distinct values: not an enum
    assert props["currency"] == {"type": "string", "enum": ["EUR", "GBP", "USD"]}
    assert props["total"] == {"type": "number"}  # ints and floats
    assert props["created_at"] == {"type": "string", "format": "date-time"}
    assert props["express"] == {"type": "boolean"}
    assert props["coupon"] == {"type": ["string", "null"]}  # 10 strings: too few for an enum
    assert props["shipping"] == {
        "type": "object",
        "properties": {
            "country": {"type": "string", "enum": ["DE"]},
            "zip": {"type": "string"},
            "note": {"type": "string", "enum": ["leave at door"]},
        },
        "required": ["country", "zip"],
    }
    assert props["items"] == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            "required": ["sku", "qty"],
        },
    }
    assert schema["required"] == [
        "order_id",
        "currency",
        "total",
        "created_at",
        "shipping",
        "items",
        "express",
    ]


def test_required_threshold_is_99_percent_of_the_objects_at_that_level() -> None:
    records = [{"a": 1, "b": 1} for _ in range(99)] + [{"a": 1}]
    assert infer(records)["required"] == ["a", "b"]  # b in 99 of 100
    records.append({"a": 1})
    assert infer(records)["required"] == ["a"]  # b in 99 of 101
    assert infer(records, required_ratio=0.5)["required"] == ["a", "b"]


def test_enum_needs_support_and_null_joins_the_enum() -> None:
    few = [{"level": "low"} for _ in range(5)]
    assert infer(few)["properties"]["level"] == {"type": "string"}
    many = [{"level": ["low", "high", None][i % 3]} for i in range(60)]
    assert infer(many)["properties"]["level"] == {
        "type": ["string", "null"],
        "enum": ["high", "low", None],
    }
    wide = [{"level": f"v{i % 11}"} for i in range(110)]
    assert infer(wide)["properties"]["level"] == {"type": "string"}
    assert infer(wide, max_enum=11)["properties"]["level"]["enum"][0] == "v0"


def test_date_time_only_when_every_string_is_one() -> None:
    assert is_date_time("2026-12-02T10:00:00+01:00")
    assert not is_date_time("2026-12-02T10:00:00")  # no offset: the compiler rejects it
    assert not is_date_time("2026-12-02")
    mixed = [{"t": "2026-12-02T10:00:00Z"}, {"t": "yesterday"}, {"t": "2026-12-02T11:00:00Z"}]
    assert infer(mixed)["properties"]["t"] == {"type": "string"}


def test_mixed_types_empty_arrays_and_non_objects() -> None:
    inferrer = SchemaInferrer()
    for record in [{"v": 1, "tags": []}, {"v": "x", "tags": []}, {"v": {"k": 1}}, [1], "s"]:
        inferrer.add(record)
    assert (inferrer.records, inferrer.skipped) == (3, 2)
    schema = inferrer.schema(title="t")
    assert schema["title"] == "t"
    assert schema["properties"]["v"] == {
        "type": ["string", "integer", "object"],
        "properties": {"k": {"type": "integer"}},
        "required": ["k"],
    }
    assert schema["properties"]["tags"] == {"type": "array"}
    assert schema["required"] == ["v"]


def test_required_ratio_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="required_ratio"):
        SchemaInferrer(required_ratio=0)


def test_the_inferred_schema_compiles_and_accepts_its_sample() -> None:
    records = [order(i) for i in range(200)]
    compiled = compile_json_schema(infer(records), source="inferred")
    for record in records:
        compiled.decoder.decode(json.dumps(record).encode())
    assert compiled.field("shipping.country").enum == ("DE",)
    assert compiled.field("created_at").format == "date-time"


# -- check ------------------------------------------------------------------------------


SCHEMA = {
    "type": "object",
    "required": ["id", "qty"],
    "properties": {
        "id": {"type": "string"},
        "qty": {"type": "integer", "minimum": 1},
        "level": {"enum": ["low", "high"]},
        "geo": {"type": "object", "properties": {"cc": {"type": "string", "maxLength": 2}}},
        "items": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    },
}


def test_check_counts_records_fields_and_reasons() -> None:
    check = SchemaCheck(compile_json_schema(SCHEMA, source="s.json"))
    values: list[bytes | None] = [
        b'{"id": "a", "qty": 1, "geo": {"cc": "DE"}}',
        b'{"id": "b", "qty": 0, "level": "mid"}',  # two errors; qty is reported first
        b'{"id": "c", "qty": 0}',
        b'{"id": "d", "qty": 2, "items": [1, -1], "level": null}',
        b'{"id": "e", "qty": 2, "items": [-5], "geo": {"cc": "DEU"}}',
        b'{"qty": 3, "level": "low"}',
        b"not json",
        None,
    ]
    decisions = [check.add(v) for v in values]
    assert decisions == [True, False, False, False, False, False, False, False]
    assert (check.records, check.valid, check.rejected, check.not_json) == (8, 1, 7, 2)
    counts = {p: (c.present, c.non_null, c.valid) for p, c in check.fields.items()}
    assert counts == {
        "id": (5, 5, 5),
        "qty": (6, 6, 4),
        "level": (3, 2, 1),
        "geo": (2, 2, 1),
        "geo.cc": (2, 2, 1),
        "items": (2, 2, 0),
    }
    assert check.reasons["Expected `int` >= 1 - at `$.qty`"] == 2
    assert check.reasons["Expected `int` >= 0 - at `$.items[*]`"] == 2  # indices folded
    assert check.reasons["Object missing required field `id`"] == 1
    report = check.to_json(top=10)
    assert report["top_reasons"][0] == {
        "reason": "Expected `int` >= 1 - at `$.qty`",
        "count": 2,
        "samples": ['{"id": "b", "qty": 0, "level": "mid"}'],
    }
    assert any(r["reason"].startswith("not JSON") for r in report["top_reasons"])
    text = check.render("orders")
    assert text.splitlines()[0] == (
        "orders: 8 records checked against s.json: 1 valid (12.5%), 7 rejected "
        "(2 empty or not JSON)"
    )
    assert "geo.cc" in text and "top rejection reasons:" in text


def test_reason_key_folds_indices_and_enum_values() -> None:
    assert reason_key("Expected `int` - at `$.a[3].b[12]`") == "Expected `int` - at `$.a[*].b[*]`"
    assert reason_key("Invalid enum value 'x' - at `$.level`") == (
        "Invalid enum value - at `$.level`"
    )


def test_field_types_follow_nested_structs_with_json_names() -> None:
    compiled = compile_json_schema(
        {
            "type": "object",
            "properties": {"a-b": {"type": ["object", "null"], "properties": {"c": {}}}},
        },
        source="t",
    )
    types = field_types(compiled.struct)
    assert set(types) == {"a-b", "a-b.c"}
    assert msgspec.json.Decoder(types["a-b"]).decode(b"null") is None


def test_progress_bar_line_and_log_mode() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, "check", 200)
    assert bar.line(50, bar._start + 1).startswith(
        "check: [#######-----------------------]  25% 50/200"
    )
    bar.finish(200)
    assert out.getvalue().startswith("check: [##############################] 100% 200/200 records")
    quiet = io.StringIO()
    ProgressBar(quiet, "check", 10, enabled=False).finish(10)
    assert quiet.getvalue() == ""
