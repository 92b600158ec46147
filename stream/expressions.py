"""Derived fields: CEL expressions compiled at start-up, evaluated over batches.

A pipeline file declares computed fields::

    derive:
      amount_eur: "amount * enrichment.fx.rate"
      score: >-
        double({'debug': 0, 'info': 1, 'warning': 2, 'error': 3, 'critical': 4}[severity] + 1)
        * (tier == 1 ? 3.0 : tier == 2 ? 2.0 : 1.0)

The language is CEL (the Common Expression Language: the rule language of
Kafka's data contracts, Kubernetes admission policies and Envoy), run by
``common-expression-language`` (module ``cel``, Python bindings of the Rust
``cel`` crate). Nothing here parses or evaluates expressions itself; the only
text scanning is :func:`_field_chains`, which finds the dotted paths an
expression reads (the library reports only their first segment) so that a
misspelt field fails at start-up.

Choice, measured (``benchmarks/micro_expressions.py``, 2-core AMD EPYC, Python
3.11, 2026-12-02, process CPU time, best of 5 rounds of 20,000 calls; µs per
call, compiled once and evaluated many times, a new amount on every call, the
cost of building the library's input from a tuple included):

================================ ======== ========== ========= =============
library                          ``flat`` ``dotted`` ``score`` syntax
================================ ======== ========== ========= =============
common-expression-language 0.10  2.39     5.84       3.33      CEL (Rust)
cel-expr-python 0.1.3            4.21     4.28       5.43      CEL (C++)
cel-python 0.5.0, transpiled     31.7     40.8       129 (!)   CEL (Python)
cel-python 0.5.0, interpreted    105      116        615 (!)   CEL (Python)
simpleeval 1.0.8                 1.59     3.25       7.69      Python subset
hand-written Python lambda       0.04     0.04       0.10      (the floor)
this module, memo miss           2.31     3.47       3.77      CEL (Rust)
this module, memo hit            0.39     0.37       0.35
this module, ``evaluate_many``   2.28     3.44       0.27
================================ ======== ========== ========= =============

``flat`` = ``amount * fx_rate``; ``dotted`` = ``amount * enrichment.fx.rate``
(nested maps in the input); ``score`` = the map lookup plus conditional above
(in the ``evaluate_many`` row over 20 distinct (severity, tier) tuples, so
mostly memo hits). (!) cel-python cannot evaluate ``tier == 1`` when ``tier`` is
null (no heterogeneous equality), so it fails the score outright. Compiling on
every call instead costs 10 to 1800 µs, so expressions are compiled once at
start-up.

Why ``common-expression-language``: it is CEL (the syntax of Kafka's data
contract rules, which users may already write), it is the fastest CEL runtime
measured on the flat and conditional cases, and it is maintained (releases
through 2026). Its cost is mostly converting Python inputs into CEL values
(about 0.7 µs per float or string, about 1.6 µs per level of nested map), not
evaluating (0.2-0.4 µs). So this module keeps one ``cel.Context`` per
expression and re-binds only the top-level variables whose value changed since
the previous evaluation (an ``enrichment`` map that stays the same over a run
of events is converted once: 5.8 -> 3.5 µs on ``dotted``), and memoises results
on the input tuple and its types (bounded: cleared at :data:`MEMO_MAX`
entries). Low-cardinality inputs (severity, tier, country) then cost about
0.3 µs per event; a high-cardinality input (an amount) about 2.3 µs per event,
which is the price of CEL over a hand-written lambda. Google's C++ runtime is
slower except on nested maps and is at 0.1.x; simpleeval is a little cheaper on
arithmetic, slower on the conditional, and Python syntax, not what data
contracts speak. Only extended functions an expression calls are registered on
its context: all ~60 of them make every evaluation after a re-bind about 4 µs
slower.

Writing expressions
-------------------

* Fields are dotted paths: ``shipping.country``, ``enrichment.fx.rate`` (the
  value a join named ``fx`` looked up), or an earlier derived field by name. A
  prefix of known paths may be used as a map (``enrichment.fx['rate']``,
  ``size(enrichment.fx)``).
* **CEL does not mix int and double**: ``amount * 2`` fails when ``amount`` is a
  double; write ``amount * 2.0``, or ``double(amount) * rate`` when a field may
  arrive as a JSON integer. ``1 == 1.0`` is true.
* **Nulls.** An absent field is ``null``. Every declared path is always bound,
  so ``has()`` is always true for it; test ``== null`` instead::

      tier == null ? 1.0 : (tier == 1 ? 3.0 : 2.0)     // default for a null tier
      amount == null ? null : amount * enrichment.fx.rate

  ``tier == 1`` is simply false for a null ``tier`` (heterogeneous equality), so
  the score above already gives weight 1.0 to a null tier. Arithmetic on a null
  (``null * 2.0``) fails that event with an :class:`ExpressionError`.
* String functions: ``contains``, ``startsWith``, ``endsWith``, ``matches``,
  ``size`` natively, plus the library's extended set (``lowerAscii``,
  ``upperAscii``, ``trim``, ``replace``, ``split``, ``join``, ``substring``,
  ``indexOf``, ``math.greatest`` … see ``cel.stdlib``).
* Deviations of this runtime from the CEL spec, pinned by tests: ``size()`` of
  a string counts UTF-8 bytes (``size('Köln') == 5``); ``string(true)`` and
  the optional syntax ``a.?b`` are not supported; a map literal with keys ``1``
  and ``true`` collapses (they are one Python key).
* Results are JSON values (int, float, str, bool, None, list, dict). Following
  the protobuf JSON mapping, a timestamp becomes an RFC 3339 string, a duration
  ``"1.5s"``, bytes base64, map keys strings. A non-finite double (``1.0 / 0.0``)
  is refused as an error, like integer division by zero.

Errors: :func:`compile_expression` raises :class:`~stream.errors.ConfigError`
(``derive.<name>``) at start-up for a syntax error, an unknown field (with the
known ones listed) or a bad name; :func:`compile_derived` also for a forward
reference or a cycle between derived fields. At run time one event's failure is
an :class:`ExpressionError` naming the derived field, the expression and the
inputs; :meth:`Expression.evaluate_many` returns it in place of the value.

An :class:`Expression` is not thread-safe (it keeps a bound context and a
memo); the engine runs each stage with concurrency 1.
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

import cel
from cel.stdlib import EXTENSIONS

from stream.arithmetic import Defer, compile_arithmetic
from stream.errors import ConfigError, PoisonMessageError

__all__ = [
    "MEMO_MAX",
    "Expression",
    "ExpressionError",
    "compile_derived",
    "compile_expression",
]

#: The memo of input tuple -> result is cleared when it reaches this many entries.
MEMO_MAX: Final = 65_536

_IDENT: Final = re.compile(r"[_A-Za-z][_A-Za-z0-9]*\Z")
#: CEL words that are not identifiers (reserved by the spec).
_RESERVED: Final = frozenset(
    [
        "false",
        "true",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ]
)
#: Names CEL itself gives meaning to (type denotations, function namespaces of the
#: extended library); not fields unless a field of that name is declared.
_CEL_NAMES: Final = frozenset(
    [
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "list",
        "map",
        "null_type",
        "type",
        "dyn",
        "math",
        "sets",
        "base64",
        "lists",
        "strings",
        "optional",
        "cel",
    ]
)
#: Comprehension macros: ``list.map(x, ...)`` binds ``x``, which is not a field.
_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})

# One token of CEL source: comment, string/bytes literal (raw first), number,
# identifier or any other single character. Used only to find field paths.
_TOKEN: Final = re.compile(
    r"""
      (?P<skip>\s+|//[^\n]*)
    | (?P<str>
          (?:[rR][bB]?|[bB][rR])(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'[^'\n]*'|"[^"\n]*")
        | [bB]?(?:'''(?:\\.|[\s\S])*?'''|\"\"\"(?:\\.|[\s\S])*?\"\"\"
                 |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
      )
    | (?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[uU]?)
    | (?P<ident>[_A-Za-z][_A-Za-z0-9]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_NOTHING: Final[Any] = object()
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


class ExpressionError(PoisonMessageError):
    """Evaluating a derived field failed for one event.

    ``field`` is the derived field's name; the message also gives the expression,
    the reason (division by zero, a null input, a type mismatch…) and the inputs.
    A :class:`~stream.errors.PoisonMessageError`: the same inputs always fail.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"derived field {field!r}: {message}")
        self.field = field


# --------------------------------------------------------------------- start-up


def _field_chains(text: str) -> tuple[list[list[str]], set[str]]:
    """Dotted identifier chains read by ``text`` and names bound by macros.

    ``a.b.c`` -> ``["a", "b", "c"]``; a trailing segment that is a method call
    (``x.startsWith(...)``) is dropped; a global call (``size(...)``) is none.
    """
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text) if m.lastgroup != "skip"]
    chains: list[list[str]] = []
    bound: set[str] = set()
    n = len(tokens)
    for i, (kind, tok) in enumerate(tokens):
        if kind != "ident" or tok in _RESERVED:
            continue
        after_dot = i > 0 and tokens[i - 1][1] == "."
        if after_dot:
            # ``.map(x, ...)``: x is a comprehension variable
            if (
                tok in _MACROS
                and i + 3 < n
                and tokens[i + 1][1] == "("
                and tokens[i + 2][0] == "ident"
                and tokens[i + 3][1] == ","
            ):
                bound.add(tokens[i + 2][1])
            continue
        if i + 1 < n and tokens[i + 1][1] == "(":
            continue  # a global function call
        chain = [tok]
        j = i + 1
        while j + 1 < n and tokens[j][1] == "." and tokens[j + 1][0] == "ident":
            chain.append(tokens[j + 1][1])
            j += 2
        if j < n and tokens[j][1] == "(" and len(chain) > 1:
            chain.pop()  # x.method(...): the receiver is the chain without the method
        chains.append(chain)
    return chains, bound


def _known_list(known: Collection[str]) -> str:
    names = sorted(known)
    shown = ", ".join(names[:20])
    return shown + (f" ... ({len(names)} in all)" if len(names) > 20 else "")


def _unknown(name: str, path: str, text: str, known: Collection[str]) -> ConfigError:
    close = difflib.get_close_matches(path, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"derive.{name}",
        f"unknown field {path!r} in {text!r}{hint}; known: {_known_list(known)}",
    )


def _resolve_inputs(name: str, text: str, program: Any, known: Collection[str]) -> list[str]:
    """The known paths ``text`` reads (an ancestor replaces its descendants)."""
    known_set = set(known)
    prefixes: set[str] = set()
    for path in known_set:
        parts = path.split(".")
        prefixes.update(".".join(parts[:k]) for k in range(1, len(parts)))
    roots = set(program.variables())
    chains, bound = _field_chains(text)
    seen_roots = {c[0] for c in chains}
    chains += [[r] for r in roots - seen_roots]  # the library saw what the scan did not
    used: set[str] = set()
    for chain in chains:
        root = chain[0]
        if root not in roots or root in bound:
            continue
        for k in range(1, len(chain) + 1):
            prefix = ".".join(chain[:k])
            if prefix in known_set:
                used.add(prefix)  # a declared field; deeper segments are CEL member access
                break
            if prefix not in prefixes:
                if k == 1 and root in _CEL_NAMES:
                    break
                raise _unknown(name, ".".join(chain), text, known_set)
        else:
            # a namespace used as a map: it reads every known path under it
            whole = ".".join(chain) + "."
            used.update(p for p in known_set if p.startswith(whole))
    # a declared object field and a path inside it: keep the object only
    return sorted(p for p in used if not any(p.startswith(q + ".") for q in used))


Builder = Callable[[tuple[Any, ...]], dict[str, Any]]


def _binders(inputs: tuple[str, ...]) -> list[tuple[str, tuple[int, ...], Builder | None]]:
    """Per top-level CEL variable: its name, the input positions it takes, and for a
    namespace (``enrichment`` of ``enrichment.fx.rate``) the builder of its nested
    maps from those values (None for a plain field, bound as it is)."""
    groups: dict[str, list[tuple[list[str], int]]] = {}
    for index, path in enumerate(inputs):
        head, *rest = path.split(".")
        groups.setdefault(head, []).append((rest, index))
    out: list[tuple[str, tuple[int, ...], Builder | None]] = []
    for head, members in groups.items():
        if len(members) == 1 and not members[0][0]:
            out.append((head, (members[0][1],), None))
            continue

        def build(sub: tuple[Any, ...], members: list[tuple[list[str], int]] = members) -> Any:
            root: dict[str, Any] = {}
            for position, (rest, _) in enumerate(members):
                node = root
                for seg in rest[:-1]:
                    node = node.setdefault(seg, {})
                node[rest[-1]] = sub[position]
            return root

        out.append((head, tuple(i for _, i in members), build))
    return out


def _extended_functions(program: cel.Program) -> dict[str, Callable[..., Any]]:
    """The functions of the library's extended set (``cel.stdlib``) ``program`` calls.

    Only those: every Python function registered on a context makes each
    evaluation after a rebind slower (all ~60 of them: 6.3 instead of 1.8 µs).
    """
    called = set(program.functions())
    names = set(program.variables())
    out: dict[str, Callable[..., Any]] = {}
    for library in EXTENSIONS.values():  # in the library's order: a later one wins
        for fname, function in library.items():
            namespace, _, short = fname.rpartition(".")
            if short in called and (not namespace or namespace in names):
                out[fname] = function
    return out


# --------------------------------------------------------------------- results


def _to_json(value: Any) -> Any:
    """A CEL result as a JSON value (protobuf JSON mapping for the CEL-only types)."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise ArithmeticError(f"result is {value} (division by zero or overflow?)")
        return value
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [_to_json(v) for v in value]
    if kind is dict:
        return {_key(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, cel.OptionalValue):
        return _to_json(value.value()) if value.has_value() else None
    raise TypeError(f"result of type {kind.__name__} has no JSON form")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


# --------------------------------------------------------------------- runtime


class Expression:
    """One compiled derived field. Build it with :func:`compile_expression`."""

    __slots__ = (
        "_binders",
        "_bound",
        "_context",
        "_fast",
        "_memo",
        "_program",
        "inputs",
        "name",
        "text",
    )

    def __init__(self, name: str, text: str, program: cel.Program, inputs: tuple[str, ...]) -> None:
        self.name = name
        self.text = text
        #: The dotted field paths this expression reads, sorted; ``evaluate`` takes
        #: their values in this order.
        self.inputs = inputs
        self._program = program
        self._context = cel.Context()
        for fname, function in _extended_functions(program).items():
            self._context.add_function(fname, function)
        self._binders = _binders(inputs)
        # per top-level variable, what was bound last: the value (a plain field) or
        # (values, *types) (a namespace); _NOTHING = nothing reusable, bind again
        self._bound: list[Any] = [_NOTHING] * len(self._binders)
        self._memo: dict[tuple[Any, ...], Any] = {}
        #: Arithmetic compiled to Python (:mod:`stream.arithmetic`), or None: CEL only.
        self._fast = compile_arithmetic(text, inputs)

    def __repr__(self) -> str:
        return f"Expression({self.name!r}, {self.text!r}, inputs={self.inputs!r})"

    def _compute(self, values: tuple[Any, ...]) -> Any:
        """Bind what changed, run the program, convert. Raises ExpressionError."""
        context = self._context
        bound = self._bound
        try:
            for slot, (var, positions, build) in enumerate(self._binders):
                prev = bound[slot]
                if build is None:
                    value = values[positions[0]]
                    kind = type(value)
                    if kind is type(prev) and kind in _SCALARS and (value is prev or value == prev):
                        continue  # 1, 1.0 and True are equal but not the same CEL value
                    bound[slot] = _NOTHING
                    context.add_variable(var, value)
                    bound[slot] = value
                else:
                    sub = tuple([values[i] for i in positions])
                    sig = (sub, *map(type, sub))
                    if sig == prev:
                        continue
                    bound[slot] = _NOTHING
                    context.add_variable(var, build(sub))
                    if all(t in _SCALARS for t in sig[1:]):
                        bound[slot] = sig
            return _to_json(self._program.execute(context))
        except (ValueError, TypeError, ArithmeticError, LookupError, RuntimeError) as exc:
            raise self._error(exc, values) from None

    def _error(self, exc: Exception, values: tuple[Any, ...]) -> ExpressionError:
        if isinstance(exc, ZeroDivisionError):
            reason = str(exc) or "division by zero"
        elif isinstance(exc, KeyError):
            reason = f"no such key {exc}"
        else:
            reason = str(exc) or type(exc).__name__
        pairs = list(zip(self.inputs, values, strict=False))
        shown = ", ".join(f"{p}={v!r}" for p, v in pairs) or "none"
        nulls = [p for p, v in pairs if v is None]
        null_note = f"; null: {', '.join(nulls)}" if nulls else ""
        return ExpressionError(
            self.name, f"evaluating {self.text!r} failed: {reason} (inputs: {shown}{null_note})"
        )

    def _lookup(self, values: tuple[Any, ...]) -> Any:
        """Memoised result (or ExpressionError instance) for one input tuple."""
        memo = self._memo
        try:
            # types are part of the key: 1, 1.0 and True are equal in Python, not in CEL
            key = (values, *map(type, values))
            result = memo.get(key, _NOTHING)
        except TypeError:  # an unhashable input (a list or map): not memoised
            return self._checked(values)
        if result is _NOTHING:
            result = self._checked(values)
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = result
        return result

    def _checked(self, values: tuple[Any, ...]) -> Any:
        if len(values) != len(self.inputs):
            raise ValueError(f"{self.name}: {len(self.inputs)} values expected, got {len(values)}")
        try:
            return self._compute(values)
        except ExpressionError as exc:
            return exc

    def evaluate(self, values: tuple[Any, ...]) -> Any:
        """The value for one event: ``values`` in :attr:`inputs` order, None for null.

        Raises :class:`ExpressionError` when the expression fails for these values.
        """
        fast = self._fast
        if fast is not None and len(values) == len(self.inputs):
            try:
                return fast(values)
            except (Defer, ArithmeticError):
                pass  # not a simple typed case: CEL decides (value or error)
        result = self._lookup(values)
        if type(result) is ExpressionError:
            raise result.with_traceback(None)
        return result

    def evaluate_many(self, rows: Sequence[tuple[Any, ...]]) -> list[Any | ExpressionError]:
        """One result per row; an :class:`ExpressionError` instance for a row that failed.

        Memoised on the input tuple (with its types): a tuple seen before, in this
        batch or an earlier one, costs one dict lookup.
        """
        memo = self._memo
        get = memo.get
        checked = self._checked
        out: list[Any] = []
        append = out.append
        fast = self._fast
        width = len(self.inputs)
        for row in rows:
            if fast is not None and len(row) == width:
                try:
                    append(fast(row))
                    continue
                except (Defer, ArithmeticError):
                    pass
            try:
                key = (row, *map(type, row))
                result = get(key, _NOTHING)
            except TypeError:  # an unhashable input (a list or map): not memoised
                append(checked(row))
                continue
            if result is _NOTHING:
                result = checked(row)
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[key] = result
            append(result)
        return out


# --------------------------------------------------------------------- public


def compile_expression(name: str, text: str, known_fields: Collection[str]) -> Expression:
    """Compile one derived field; :class:`ConfigError` (``derive.<name>``) if it cannot run.

    ``known_fields`` are the dotted paths an expression may read (event fields,
    ``enrichment.<join>.<field>``, earlier derived names).
    """
    field = f"derive.{name}"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(field, "expected a non-empty CEL expression string")
    try:
        program = cel.compile(text)
    except ValueError as exc:
        message = str(exc).replace("Failed to parse expression", "syntax error in", 1)
        raise ConfigError(field, message) from None
    inputs = tuple(_resolve_inputs(name, text, program, known_fields))
    return Expression(name, text, program, inputs)


def compile_derived(spec: Mapping[str, str], known_fields: Collection[str]) -> list[Expression]:
    """Compile a ``derive:`` mapping in declaration order.

    Each expression may read the fields and the derived fields declared before
    it. A derived name must be a CEL identifier that is not already a field; a
    reference to a later derived field (a forward reference, and so any cycle)
    is a :class:`ConfigError`, which names the cycle when there is one.
    """
    known = set(known_fields)
    names = list(spec)
    uses: dict[str, set[str]] = {}
    for name in names:
        if not _IDENT.match(name) or name in _RESERVED:
            raise ConfigError(f"derive.{name}", "a derived field name must be a CEL identifier")
        if name in known or any(k.startswith(name + ".") for k in known):
            raise ConfigError(f"derive.{name}", f"{name!r} is already a field")
        try:
            uses[name] = set(cel.compile(spec[name]).variables()) & set(names)
        except (ValueError, TypeError):
            uses[name] = set()  # compile_expression reports it below
    out: list[Expression] = []
    for position, name in enumerate(names):
        later = uses[name] & set(names[position:])
        if later:
            cycle = _cycle(name, uses)
            if cycle:
                reason = "cycle between derived fields: " + " -> ".join(cycle)
            else:
                reason = (
                    f"uses {sorted(later)[0]!r}, which is declared later; "
                    "a derived field may only use fields derived before it"
                )
            raise ConfigError(f"derive.{name}", reason)
        out.append(compile_expression(name, spec[name], known | set(names[:position])))
    return out


def _cycle(start: str, edges: Mapping[str, set[str]]) -> list[str]:
    """A path start -> ... -> start through ``edges``, or [] if there is none."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return []
