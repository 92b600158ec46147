"""Simple CEL arithmetic as Python closures, with CEL itself for every other case.

A derived field like ``double(amount) * double(enrichment.fx.rate)`` reads an input
that is new on every event (an amount), so :mod:`stream.expressions`' memo never
hits and each event paid one CEL evaluation (~2.3 µs, most of it converting the
inputs into CEL values; py-spy: 35% of the orders worker's main thread). This
module compiles the arithmetic subset of CEL into one Python function:

* literals: decimal ints, doubles (``2.0``, ``1e3``), ``null``, ``true``, ``false``;
* field paths the expression reads (exactly its declared inputs), parentheses;
* ``+ - * /``, unary ``-``, ``double(x)``, ``< <= > >= == !=``, ``x == null``,
  ``x != null``, and the conditional ``c ? a : b``.

Anything else in the text (``%``, ``&&``, maps, strings, functions, uint or hex
literals) leaves the expression to CEL entirely. Inside the subset, the function
computes a value only where CEL's result is certain and identical — two doubles
(IEEE, as in the Rust runtime), two ints within int64 whose result stays within
int64, ``double`` of a double or an int64, a ``bool`` condition, a null test on a
scalar — and raises :class:`Defer` for every other case (mixed int and double, a
null operand, an overflow, a division, a non-finite result…), so the caller
evaluates that one event with CEL and gets CEL's value or CEL's error. Literals
are bound as names of the generated function, never pasted into its source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_TOKENS: Final = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.]))"
    r"|(?P<name>[_A-Za-z][_A-Za-z0-9]*)"
    r"|(?P<op>==|!=|<=|>=|[-+*/()<>?:.]))",
    re.ASCII,
)
_SCALARS: Final = frozenset({int, float, str, bool, type(None)})


class Defer(Exception):
    """This event leaves the simple typed cases: evaluate it with CEL."""


class _Unsupported(Exception):
    """The text uses something outside the subset: no fast function."""


def _int(value: int) -> int:
    if _I64_MIN <= value <= _I64_MAX:
        return value
    raise Defer


def _double(x: Any) -> float:
    kind = x.__class__
    if kind is float:
        return x  # type: ignore[no-any-return]
    if kind is int and _I64_MIN <= x <= _I64_MAX:
        return float(x)
    raise Defer


def _arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        kind = a.__class__
        if kind is not b.__class__:
            raise Defer
        if kind is float:
            return op(a, b)
        if kind is int and _I64_MIN <= a <= _I64_MAX and _I64_MIN <= b <= _I64_MAX:
            return _int(op(a, b))
        raise Defer

    return apply


def _div(a: Any, b: Any) -> Any:
    if a.__class__ is float and b.__class__ is float and b != 0.0:
        return a / b
    raise Defer  # int division truncates in CEL; a zero divisor is CEL's to report


def _neg(a: Any) -> Any:
    kind = a.__class__
    if kind is float:
        return -a
    if kind is int and _I64_MIN < a <= _I64_MAX:
        return -a
    raise Defer


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def apply(a: Any, b: Any) -> bool:
        kind = a.__class__
        if kind is b.__class__ and (kind is float or kind is int):
            return op(a, b)
        raise Defer

    return apply


def _order(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """``< <= > >=``: CEL refuses to order a NaN ("no such overload"), so a NaN defers."""

    def apply(a: Any, b: Any) -> bool:
        kind = a.__class__
        if kind is b.__class__ and (kind is int or (kind is float and a == a and b == b)):
            return op(a, b)
        raise Defer

    return apply


def _is_null(x: Any) -> bool:
    if x is None:
        return True
    if x.__class__ in _SCALARS:
        return False
    raise Defer


def _condition(c: Any) -> bool:
    if c is True or c is False:
        return c
    raise Defer


def _result(value: Any) -> Any:
    if value.__class__ is float and not math.isfinite(value):
        raise Defer  # CEL's result, refused by the caller with its own message
    return value


_HELPERS: Final[dict[str, Any]] = {
    "_double": _double,
    "_neg": _neg,
    "_is_null": _is_null,
    "_cond": _condition,
    "_result": _result,
    "_div": _div,
    "_ops": {
        "+": _arith(lambda a, b: a + b),
        "-": _arith(lambda a, b: a - b),
        "*": _arith(lambda a, b: a * b),
        "<": _order(lambda a, b: a < b),
        "<=": _order(lambda a, b: a <= b),
        ">": _order(lambda a, b: a > b),
        ">=": _order(lambda a, b: a >= b),
        "==": _compare(lambda a, b: a == b),
        "!=": _compare(lambda a, b: a != b),
    },
}


class _Parser:
    """Recursive descent over the subset; emits Python source calling the helpers."""

    def __init__(self, text: str, inputs: Sequence[str]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.inputs = {path: i for i, path in enumerate(inputs)}
        #: name in the generated source -> value (literals and operator helpers)
        self.bound: dict[str, Any] = {}

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise _Unsupported("unexpected end")
        token = self.tokens[self.pos]
        if expected is not None and token[1] != expected:
            raise _Unsupported(f"expected {expected}")
        self.pos += 1
        return token

    def bind(self, value: Any) -> str:
        name = f"_k{len(self.bound)}"
        self.bound[name] = value
        return name

    def parse(self) -> str:
        source = self.conditional()
        if self.pos != len(self.tokens):
            raise _Unsupported("trailing tokens")
        return source

    def conditional(self) -> str:
        cond = self.relation()
        if self.peek() != "?":
            return cond
        self.take("?")
        yes = self.conditional()
        self.take(":")
        no = self.conditional()
        return f"(({yes}) if _cond({cond}) else ({no}))"

    def relation(self) -> str:
        left = self.additive()
        op = self.peek()
        if op not in ("==", "!=", "<", "<=", ">", ">="):
            return left
        self.take()
        right = self.additive()
        if self.peek() in ("==", "!=", "<", "<=", ">", ">="):
            raise _Unsupported("chained relation")
        if op in ("==", "!=") and "None" in (left, right):
            other = right if left == "None" else left
            test = f"_is_null({other})"
            return test if op == "==" else f"(not {test})"
        return f"{self.bind(_HELPERS['_ops'][op])}({left}, {right})"

    def additive(self) -> str:
        left = self.multiplicative()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            right = self.multiplicative()
            left = f"{self.bind(_HELPERS['_ops'][op])}({left}, {right})"
        return left

    def multiplicative(self) -> str:
        left = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()[1]
            right = self.unary()
            helper = _div if op == "/" else _HELPERS["_ops"][op]
            left = f"{self.bind(helper)}({left}, {right})"
        return left

    def unary(self) -> str:
        if self.peek() == "-":
            self.take()
            return f"_neg({self.unary()})"
        return self.primary()

    def primary(self) -> str:
        kind, token = self.take()
        if kind == "num":
            if "." in token or "e" in token or "E" in token:
                return self.bind(float(token))
            return self.bind(_int(int(token)))
        if token == "(":
            inner = self.conditional()
            self.take(")")
            return f"({inner})"
        if kind != "name":
            raise _Unsupported(token)
        if token == "null":
            return "None"
        if token in ("true", "false"):
            return "True" if token == "true" else "False"
        if token == "double" and self.peek() == "(":
            self.take("(")
            inner = self.conditional()
            self.take(")")
            return f"_double({inner})"
        path = token
        while self.peek() == ".":
            self.take(".")
            kind, segment = self.take()
            if kind != "name":
                raise _Unsupported(segment)
            path += "." + segment
        if self.peek() == "(" or path not in self.inputs:
            raise _Unsupported(path)  # a function, a method, a map, or a namespace
        return f"v[{self.inputs[path]}]"


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        match = _TOKENS.match(text, pos)
        if match is None or match.end() == pos:
            raise _Unsupported(text[pos:])
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def compile_arithmetic(text: str, inputs: Sequence[str]) -> Callable[[tuple[Any, ...]], Any] | None:
    """A function of the input tuple (in ``inputs`` order) computing ``text``, raising
    :class:`Defer` where CEL must decide; None when ``text`` is outside the subset."""
    try:
        parser = _Parser(text, inputs)
        body = parser.parse()
    except (_Unsupported, Defer, ValueError, OverflowError):
        return None
    namespace: dict[str, Any] = {**_HELPERS, **parser.bound}
    source = f"def fast(v):\n    return _result({body})\n"
    exec(compile(source, f"<derive {text[:40]!r}>", "exec"), namespace)
    function: Callable[[tuple[Any, ...]], Any] = namespace["fast"]
    return function
