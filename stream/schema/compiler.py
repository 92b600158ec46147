"""JSON Schema (draft 2020-12 subset) -> msgspec types, compiled once at start-up.

Decoding a record must stay one msgspec C pass (about 0.5 µs for a small event,
see DESIGN.md §2), so the schema is not interpreted per event: each subschema
becomes a msgspec type and msgspec does the validation while it decodes.

================================  =========================================================
JSON Schema                       msgspec type
================================  =========================================================
``type: string``                  ``str`` + ``Meta(min_length, max_length, pattern)``
``format: date-time``             ``Annotated[datetime, Meta(tz=True)]`` (an aware datetime)
``type: integer``                 ``int`` + ``Meta(ge, le)`` (exclusive and fractional bounds
                                  rounded to the equivalent inclusive integer)
``type: number``                  ``int | float``, each with ``Meta(ge/gt, le/lt)`` (an integer
                                  stays an ``int``)
``type: boolean`` / ``null``      ``bool`` / ``None``
``type: array`` + ``items``       ``list[T]`` + ``Meta(min_length, max_length)``
``type: object`` + properties     a nested ``Struct`` (``defstruct``, ``kw_only``, ``gc=False``)
``additionalProperties: false``   ``forbid_unknown_fields=True``
``additionalProperties: {schema}``  ``dict[str, T]`` (only on an object without properties)
``enum`` / ``const``              ``Literal[...]`` (values the other keywords rule out are dropped)
a list of types / no ``type``     a ``Union`` of the above (no ``type``: all seven JSON types)
optional property                 ``T | UnsetType = UNSET``: absent is UNSET, ``null`` is rejected
                                  unless ``"null"`` is an allowed type; ``default`` replaces UNSET
``$ref: '#/$defs/x'``             the referenced schema, inlined (a ``$ref`` alone; not recursive)
================================  =========================================================

Every other keyword is refused with a :class:`SchemaError` naming its JSON pointer,
never ignored; annotation keywords (``title``, ``description``, ``$comment``, ...) are
accepted. Deliberate differences from JSON Schema:

- ``integer`` rejects ``1.0`` and ``1e2`` (JSON Schema: integers). msgspec decodes a
  JSON number with a fraction or exponent as a float; accepting them would mean a
  float-typed field or a second pass. Integral-valued floats in ``enum``/``const`` and
  fractional bounds are normalised at compile time, so only the document side differs.
- ``pattern`` runs on Python's ``re`` (see :mod:`stream.schema.patterns`).
- ``format`` asserts: 2020-12 makes it an annotation by default, but a pipeline that
  names ``date-time`` wants it checked (and decoded). Other formats are refused, not
  silently treated as annotations.
- ``date-time`` is msgspec's RFC 3339 parser: a leap second (``23:59:60``) is rejected
  and a space instead of ``T`` is accepted.
- a ``default`` must itself match its schema (the engine reads it as a decoded value).
- the top level must be an object (a Kafka event) and compiles to a Struct.

Decoded values are trees (JSON cannot express a cycle), which is why the Structs are
``gc=False``: the collector never scans millions of in-flight events.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union
from urllib.parse import unquote

import msgspec
from msgspec import UNSET, Meta, UnsetType

from stream.schema.errors import SchemaError, pointer_join, unsupported
from stream.schema.model import CompiledSchema, FieldInfo
from stream.schema.names import assign_attrs
from stream.schema.patterns import compile_pattern

#: Keywords that only annotate; accepted anywhere and without effect on validation.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "$schema",
        "$comment",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
#: Keywords the compiler turns into msgspec types.
SUPPORTED = frozenset(
    {
        "type",
        "required",
        "properties",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minItems",
        "maxItems",
        "additionalProperties",
        "$ref",
        "$defs",
        "$id",
    }
)
JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")
_ALL_TYPES = frozenset(JSON_TYPES)
_STRING_KEYWORDS = ("minLength", "maxLength", "pattern")
_DATETIME = Annotated[datetime.datetime, Meta(tz=True)]
_SCALAR_DEFAULTS = (str, int, float, bool, type(None), datetime.datetime)


@dataclass(frozen=True)
class Prop:
    """A property of a compiled object: JSON name, attribute and its compiled schema."""

    name: str
    attr: str
    pointer: str
    required: bool
    has_default: bool
    node: Node


@dataclass(frozen=True)
class Node:
    """One compiled subschema."""

    tp: Any
    types: frozenset[str]
    enum: tuple[object, ...] | None = None
    format: str | None = None
    #: the properties when the object part compiled to a Struct
    props: tuple[Prop, ...] | None = None

    @property
    def nullable(self) -> bool:
        return "null" in self.types


_ANY = Node(Any, _ALL_TYPES)


def compile_json_schema(doc: Mapping[str, Any], *, source: str) -> CompiledSchema:
    """Compile a JSON Schema document whose top level describes an object (an event)."""
    if not isinstance(doc, Mapping):
        raise SchemaError(source, "", None, "the schema must be a JSON object")
    compiler = _Compiler(doc, source)
    root, pointer = compiler.deref(doc, "")
    if not isinstance(root, Mapping):
        raise SchemaError(source, pointer, None, "the top-level schema must be a JSON object")
    compiler.check_keywords(root, pointer)
    declared = compiler.types(root, pointer)
    if "type" in root and declared != {"object"}:
        raise SchemaError(
            source,
            pointer,
            "type",
            f"the top level must be type 'object' (an event), got {root['type']!r}",
        )
    for keyword in ("enum", "const"):
        if keyword in root:
            raise SchemaError(
                source, pointer, keyword, f"keyword {keyword!r} is not supported at the top level"
            )
    node = compiler.object_node(root, pointer, force_struct=True)
    assert node.props is not None
    fields: dict[str, FieldInfo] = {}
    _collect(node.props, "", (), (), fields, source)
    required = frozenset(p.name for p in node.props if p.required)
    return CompiledSchema(node.tp, fields, required, source)


def compile_type(doc: Any, *, source: str) -> Any:
    """The msgspec type for any schema (not only objects); used by the conformance tests."""
    compiler = _Compiler(doc, source)
    node = compiler.node(doc, "")
    try:
        msgspec.json.Decoder(node.tp)
    except (TypeError, ValueError) as exc:
        raise SchemaError(
            source, "", None, f"msgspec cannot decode this combination: {exc}"
        ) from None
    return node.tp


def _collect(
    props: tuple[Prop, ...],
    prefix: str,
    attrs: tuple[str, ...],
    optional: tuple[bool, ...],
    out: dict[str, FieldInfo],
    source: str,
) -> None:
    for prop in props:
        path = f"{prefix}.{prop.name}" if prefix else prop.name
        if path in out:
            raise SchemaError(
                source, prop.pointer, None, f"property path {path!r} is ambiguous (a '.' in a name)"
            )
        level_optional = (not prop.required and not prop.has_default) or prop.node.nullable
        node = prop.node
        info = FieldInfo(
            path,
            (*attrs, prop.attr),
            (*optional, level_optional),
            node.types,
            node.enum,
            node.format,
        )
        out[path] = info
        if node.props is not None:
            _collect(node.props, path, info.attrs, info.optional, out, source)


def _struct_name(source: str, pointer: str) -> str:
    stem = re.split(r"[./\\]", source.rsplit("/", 1)[-1])[0] or "Event"
    base = "".join(part.capitalize() for part in re.split(r"\W|_", stem) if part) or "Event"
    if base[0].isdigit():
        base = "S" + base
    suffix = re.sub(r"\W+", "_", pointer.replace("/properties/", "/")).strip("_")
    return f"{base}_{suffix}" if suffix else base


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``true != 1``; arrays and objects compared deeply."""
    ta, tb = _json_type(a), _json_type(b)
    numeric = {"integer", "number"}
    if ta in numeric and tb in numeric:
        return bool(a == b)
    if ta != tb:
        return False
    if ta == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _union(parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else Union[tuple(parts)]  # noqa: UP007


def _annotated(tp: Any, meta: dict[str, Any]) -> Any:
    return Annotated[tp, Meta(**meta)] if meta else tp


class _Compiler:
    def __init__(self, root: Any, source: str) -> None:
        self.root = root
        self.source = source
        self._refs: list[str] = []

    def error(self, pointer: str, keyword: str | None, reason: str) -> SchemaError:
        return SchemaError(self.source, pointer, keyword, reason)

    # -- entry points ------------------------------------------------------------------

    def node(self, schema: Any, pointer: str) -> Node:
        if schema is True:
            return _ANY
        if schema is False:
            raise self.error(
                pointer, None, "the schema 'false' (nothing is valid) is not supported"
            )
        if not isinstance(schema, Mapping):
            raise self.error(pointer, None, "a schema must be a JSON object or a boolean")
        self.check_keywords(schema, pointer)
        if "$ref" in schema:
            target, target_pointer = self.deref(schema, pointer)
            self._refs.append(target_pointer)
            try:
                return self.node(target, target_pointer)
            finally:
                self._refs.pop()
        if set(schema) <= ANNOTATIONS | {"$defs", "$id"}:
            return _ANY
        types = self.types(schema, pointer)
        if "const" in schema or "enum" in schema:
            return self._enum_node(schema, pointer, types)
        parts: list[Any] = []
        props: tuple[Prop, ...] | None = None
        fmt = self._format(schema, pointer, types)
        for json_type in JSON_TYPES:
            if json_type not in types or (json_type == "integer" and "number" in types):
                continue
            if json_type == "object":
                obj = self.object_node(schema, pointer)
                parts.append(obj.tp)
                props = obj.props
            else:
                parts.extend(self._scalar_types(schema, pointer, json_type, fmt))
        shown = types | {"integer"} if "number" in types else types
        return Node(_union(parts), frozenset(shown), None, fmt, props)

    def check_keywords(self, schema: Mapping[str, Any], pointer: str) -> None:
        for keyword in schema:
            if keyword not in SUPPORTED and keyword not in ANNOTATIONS:
                raise unsupported(self.source, pointer, keyword)
        if "$id" in schema and pointer != "":
            raise self.error(pointer, "$id", "'$id' is only supported at the top level")
        if "$ref" in schema:
            others = sorted(set(schema) - ANNOTATIONS - {"$ref", "$defs", "$id"})
            if others:
                raise self.error(
                    pointer,
                    "$ref",
                    f"'$ref' is only supported alone, not next to {others[0]!r}",
                )

    def deref(self, schema: Any, pointer: str) -> tuple[Any, str]:
        """Follow ``$ref`` chains to the schema they name (local JSON pointers only)."""
        seen: list[str] = []
        while isinstance(schema, Mapping) and "$ref" in schema:
            self.check_keywords(schema, pointer)
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise self.error(
                    pointer,
                    "$ref",
                    f"only local references like '#/$defs/name' are supported, got {ref!r}",
                )
            target = unquote(ref[1:])
            if target in self._refs or target in seen or (target == "" and pointer != ""):
                raise self.error(pointer, "$ref", f"recursive reference {ref!r} is not supported")
            seen.append(pointer)
            schema, pointer = self._resolve(target, pointer, ref), target
        return schema, pointer

    def _resolve(self, target: str, pointer: str, ref: str) -> Any:
        if target and not target.startswith("/"):
            raise self.error(pointer, "$ref", f"anchors are not supported: {ref!r}")
        node: Any = self.root
        for token in target.split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise self.error(pointer, "$ref", f"reference {ref!r} points to nothing")
        return node

    def types(self, schema: Mapping[str, Any], pointer: str) -> frozenset[str]:
        declared = schema.get("type")
        if declared is None:
            return _ALL_TYPES
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not names:
            raise self.error(pointer, "type", "must be a type name or a non-empty list of them")
        for name in names:
            if name not in _ALL_TYPES:
                raise self.error(
                    pointer, "type", f"unknown type {name!r}; known: {', '.join(JSON_TYPES)}"
                )
        return frozenset(names)

    # -- enum / const ------------------------------------------------------------------

    def _enum_node(self, schema: Mapping[str, Any], pointer: str, types: frozenset[str]) -> Node:
        values: list[Any] | None = None
        keyword = "enum"
        if "const" in schema:
            values, keyword = [schema["const"]], "const"
        if "enum" in schema:
            listed = schema["enum"]
            if not isinstance(listed, list):
                raise self.error(pointer, "enum", "must be a list")
            values = (
                listed
                if values is None
                else [v for v in values if any(json_equal(v, e) for e in listed)]
            )
        assert values is not None
        fmt = self._format(schema, pointer, types)
        kept: list[Any] = []
        seen: list[Any] = []
        for value in values:
            json_type = _json_type(value)
            allowed = json_type in types or (json_type == "integer" and "number" in types)
            if not allowed or any(json_equal(value, s) for s in seen):
                continue
            if json_type in ("object", "array", "number"):
                raise self.error(
                    pointer, keyword, f"{keyword} values of type {json_type} are not supported"
                )
            if json_type == "integer" and isinstance(value, float):
                value = int(value)
            if json_type in ("string", "integer"):
                (check,) = self._scalar_types(schema, pointer, json_type, fmt)
                try:
                    msgspec.convert(value, check, strict=True)
                except msgspec.ValidationError:
                    continue  # the other keywords rule this value out
            seen.append(value)
            kept.append(value)
        if not kept:
            raise self.error(
                pointer, keyword, f"no value of the {keyword} can satisfy the other keywords"
            )
        literals = tuple(v for v in kept if v is not None)
        parts: list[Any] = [Literal[literals]] if literals else []
        if len(literals) < len(kept):
            parts.append(None)
        kept_types = frozenset(_json_type(v) for v in kept)
        return Node(_union(parts), kept_types, tuple(kept), fmt if "string" in kept_types else None)

    # -- scalars and arrays ------------------------------------------------------------

    def _format(self, schema: Mapping[str, Any], pointer: str, types: frozenset[str]) -> str | None:
        fmt = schema.get("format")
        if fmt is None:
            return None
        if fmt != "date-time":
            raise self.error(
                pointer, "format", f"format {fmt!r} is not supported (only 'date-time')"
            )
        if "string" not in types:
            return None
        for keyword in _STRING_KEYWORDS:
            if keyword in schema:
                raise self.error(
                    pointer,
                    keyword,
                    f"keyword {keyword!r} cannot be combined with format 'date-time' "
                    "(the value decodes to a datetime)",
                )
        return "date-time"

    def _scalar_types(
        self, schema: Mapping[str, Any], pointer: str, json_type: str, fmt: str | None
    ) -> list[Any]:
        if json_type == "string":
            if fmt == "date-time":
                return [_DATETIME]
            meta = self._lengths(schema, pointer, "minLength", "maxLength")
            if "pattern" in schema:
                pattern = schema["pattern"]
                if not isinstance(pattern, str):
                    raise self.error(pointer, "pattern", "must be a string")
                try:
                    meta["pattern"] = compile_pattern(pattern)
                except re.error as exc:
                    raise self.error(
                        pointer, "pattern", f"invalid regular expression: {exc}"
                    ) from None
            return [self._checked(_annotated(str, meta), pointer)]
        if json_type == "integer":
            return [self._checked(_annotated(int, self._int_bounds(schema, pointer)), pointer)]
        if json_type == "number":
            ints = self._checked(_annotated(int, self._int_bounds(schema, pointer)), pointer)
            floats = self._checked(_annotated(float, self._float_bounds(schema, pointer)), pointer)
            return [ints, floats]
        if json_type == "boolean":
            return [bool]
        if json_type == "null":
            return [None]
        assert json_type == "array"
        meta = self._lengths(schema, pointer, "minItems", "maxItems")
        items = schema.get("items", True)
        if items is False:
            meta["max_length"] = 0
            item_type: Any = Any
        elif isinstance(items, list):
            raise self.error(
                pointer,
                "items",
                "an array of schemas (tuple validation, 'prefixItems' in 2020-12) is not supported",
            )
        else:
            item_type = self.node(items, pointer_join(pointer, "items")).tp
        return [self._checked(_annotated(list[item_type], meta), pointer)]

    def _checked(self, tp: Any, pointer: str) -> Any:
        try:
            msgspec.json.Decoder(tp)
        except (TypeError, ValueError) as exc:
            raise self.error(pointer, None, f"cannot be expressed with msgspec: {exc}") from None
        return tp

    def _count(self, schema: Mapping[str, Any], pointer: str, keyword: str) -> int | None:
        value = schema.get(keyword)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(pointer, keyword, f"must be a non-negative integer, got {value!r}")
        return value

    def _lengths(
        self, schema: Mapping[str, Any], pointer: str, low: str, high: str
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        lower, upper = self._count(schema, pointer, low), self._count(schema, pointer, high)
        if lower:
            meta["min_length"] = lower
        if upper is not None:
            meta["max_length"] = upper
        return meta

    def _number(self, schema: Mapping[str, Any], pointer: str, keyword: str) -> float | None:
        value = schema.get(keyword)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(pointer, keyword, f"must be a number, got {value!r}")
        return value

    def _int_bounds(self, schema: Mapping[str, Any], pointer: str) -> dict[str, Any]:
        lows: list[int] = []
        highs: list[int] = []
        if (v := self._number(schema, pointer, "minimum")) is not None:
            lows.append(math.ceil(v))
        if (v := self._number(schema, pointer, "exclusiveMinimum")) is not None:
            lows.append(math.floor(v) + 1)
        if (v := self._number(schema, pointer, "maximum")) is not None:
            highs.append(math.floor(v))
        if (v := self._number(schema, pointer, "exclusiveMaximum")) is not None:
            highs.append(math.ceil(v) - 1)
        meta: dict[str, Any] = {}
        if lows:
            meta["ge"] = max(lows)
        if highs:
            meta["le"] = min(highs)
        return meta

    def _float_bounds(self, schema: Mapping[str, Any], pointer: str) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        low = self._number(schema, pointer, "minimum")
        xlow = self._number(schema, pointer, "exclusiveMinimum")
        if xlow is not None and (low is None or xlow >= low):
            meta["gt"] = xlow
        elif low is not None:
            meta["ge"] = low
        high = self._number(schema, pointer, "maximum")
        xhigh = self._number(schema, pointer, "exclusiveMaximum")
        if xhigh is not None and (high is None or xhigh <= high):
            meta["lt"] = xhigh
        elif high is not None:
            meta["le"] = high
        return meta

    # -- objects -----------------------------------------------------------------------

    def object_node(
        self, schema: Mapping[str, Any], pointer: str, *, force_struct: bool = False
    ) -> Node:
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping):
            raise self.error(pointer, "properties", "must be an object of schemas")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.error(pointer, "required", "must be a list of property names")
        extra = schema.get("additionalProperties", True)
        if isinstance(extra, Mapping) and not extra:
            extra = True
        if isinstance(extra, Mapping):
            if properties or required or force_struct:
                raise self.error(
                    pointer,
                    "additionalProperties",
                    "a schema for additionalProperties is only supported on a nested object "
                    "without 'properties' or 'required' (it becomes a dict)",
                )
            value = self.node(extra, pointer_join(pointer, "additionalProperties"))
            return Node(dict[str, value.tp], frozenset({"object"}))  # type: ignore[name-defined]
        if not isinstance(extra, bool):
            raise self.error(pointer, "additionalProperties", "must be a boolean or a schema")
        if not (properties or required or extra is False or force_struct):
            return Node(dict[str, Any], frozenset({"object"}))
        return self._struct(properties, required, extra, pointer)

    def _struct(
        self,
        properties: Mapping[str, Any],
        required: list[str],
        extra: bool,
        pointer: str,
    ) -> Node:
        names = list(properties) + [r for r in dict.fromkeys(required) if r not in properties]
        attrs = assign_attrs(names)
        needed = set(required)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        props: list[Prop] = []
        for name in names:
            attr = attrs[name]
            if name in properties:
                sub_pointer = pointer_join(pointer, "properties", name)
                child = self.node(properties[name], sub_pointer)
                sub_schema = properties[name]
            else:
                sub_pointer, child, sub_schema = pointer_join(pointer, "required"), _ANY, True
            is_required = name in needed
            has_default = (
                not is_required and isinstance(sub_schema, Mapping) and "default" in sub_schema
            )
            if is_required:
                fields.append((attr, child.tp))
            elif has_default:
                fields.append((attr, child.tp, self._default(sub_schema, sub_pointer, child.tp)))
            else:
                tp = child.tp if child.tp is Any else Union[child.tp, UnsetType]  # noqa: UP007
                fields.append((attr, tp, UNSET))
            props.append(Prop(name, attr, sub_pointer, is_required, has_default, child))
        rename = {attrs[n]: n for n in names if attrs[n] != n}
        try:
            struct = msgspec.defstruct(
                _struct_name(self.source, pointer),
                fields,
                kw_only=True,
                forbid_unknown_fields=extra is False,
                rename=rename or None,
                gc=False,
            )
        except (TypeError, ValueError) as exc:  # e.g. a '"' or control character in a name
            raise self.error(pointer, "properties", f"cannot be expressed: {exc}") from None
        return Node(struct, frozenset({"object"}), None, None, tuple(props))

    def _default(self, schema: Mapping[str, Any], pointer: str, tp: Any) -> Any:
        raw = schema["default"]
        try:
            value = msgspec.convert(raw, tp, strict=True)
        except msgspec.ValidationError as exc:
            raise self.error(
                pointer, "default", f"default {raw!r} does not match the schema: {exc}"
            ) from None
        if isinstance(value, _SCALAR_DEFAULTS):
            return value
        return msgspec.field(default_factory=lambda: msgspec.convert(raw, tp, strict=True))
