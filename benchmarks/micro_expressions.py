"""Micro-benchmark of expression libraries for derived fields (``stream.expressions``).

Times the per-call cost of evaluating three expressions, each over a list of
distinct input tuples (every call sees a new amount, as a high-cardinality input
does when memoisation cannot help), with every candidate that is installed:

* ``common-expression-language`` (module ``cel``, Rust-backed CEL) — the one
  ``stream.expressions`` uses;
* ``cel-expr-python`` (module ``cel_expr_python``, Google's C++ CEL runtime);
* ``cel-python`` (module ``celpy``, pure-Python CEL; interpreted and transpiled runners);
* ``simpleeval`` (Python syntax, AST-walking interpreter);
* a hand-written Python lambda, the floor no library can beat;
* ``stream.expressions`` itself (the chosen library plus this project's glue:
  tuple -> variables, result conversion, error mapping, memo): ``evaluate`` on a
  memo miss (memo cleared before every call: the cost of a new amount), on a memo
  hit, and ``evaluate_many`` over the whole list as one batch (``flat``/``dotted``:
  every amount new, the fx rate the same; ``score``: 20 distinct tuples, so
  mostly hits).

Modes: ``once`` = compile once, evaluate many (what the engine does);
``per-call`` = parse/compile on every evaluation, where the library offers a
one-shot call (shows what pre-compiling saves). The cost includes building the
library's input from a tuple of values, as the engine must.

Expressions (CEL text; the Python libraries get the Python spelling):

* ``flat``:  ``amount * fx_rate``
* ``dotted``: ``amount * enrichment.fx.rate`` (nested maps in the input)
* ``score``: ``double({'debug': 0, ..., 'critical': 4}[severity] + 1)
  * (tier == 1 ? 3.0 : tier == 2 ? 2.0 : 1.0)`` (map lookup + conditional)

Candidates that are not installed are skipped. To measure all of them:

    .venv/bin/pip install common-expression-language cel-expr-python cel-python simpleeval
    PYTHONPATH=. .venv/bin/python benchmarks/micro_expressions.py            # ~1 min
    PYTHONPATH=. .venv/bin/python benchmarks/micro_expressions.py --calls 5000 --repeat 3

Times are this process's CPU time (``time.process_time``; the stable number on a
shared 2-core machine, where wall time moves with the neighbours' load), best of
``--repeat`` rounds. Prints a Markdown table (µs per call) and writes
``benchmarks/results/micro-expressions-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import json
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}
SEVERITIES = list(RANK)

CEL = {
    "flat": "amount * fx_rate",
    "dotted": "amount * enrichment.fx.rate",
    "score": (
        "double({'debug': 0, 'info': 1, 'warning': 2, 'error': 3, 'critical': 4}[severity] + 1)"
        " * (tier == 1 ? 3.0 : tier == 2 ? 2.0 : 1.0)"
    ),
}
PY = {
    "flat": "amount * fx_rate",
    "dotted": "amount * enrichment['fx']['rate']",
    "score": (
        "({'debug': 0, 'info': 1, 'warning': 2, 'error': 3, 'critical': 4}[severity] + 1)"
        " * (3.0 if tier == 1 else 2.0 if tier == 2 else 1.0)"
    ),
}
# the dotted field paths each expression reads, in the order of the input tuples
INPUTS = {
    "flat": ("amount", "fx_rate"),
    "dotted": ("amount", "enrichment.fx.rate"),
    "score": ("severity", "tier"),
}

Bench = Callable[[tuple[Any, ...]], Any]


def make_rows(expr: str, n: int, seed: int) -> list[tuple[Any, ...]]:
    """``n`` input tuples, each distinct (amounts differ on every row)."""
    rnd = random.Random(seed)
    if expr in ("flat", "dotted"):
        return [(round(rnd.uniform(1, 10_000), 2) + i * 1e-6, 1.08) for i in range(n)]
    # score: few distinct values in reality; distinct tuples here would need a
    # huge enum, so the cost is per call on repeated tuples (no memo in this loop)
    return [(SEVERITIES[i % 5], (None, 1, 2, 3)[i % 4]) for i in range(n)]


def variables(expr: str, row: tuple[Any, ...]) -> dict[str, Any]:
    """The top-level variables a CEL/Python evaluator needs for ``row``."""
    if expr == "dotted":
        return {"amount": row[0], "enrichment": {"fx": {"rate": row[1]}}}
    return dict(zip(INPUTS[expr], row, strict=True))


# ---------------------------------------------------------------- candidates


def cands_rust_cel(expr: str) -> dict[str, Bench]:
    import cel

    text = CEL[expr]
    program = cel.compile(text)

    def once(row: tuple[Any, ...]) -> Any:
        return program.execute(variables(expr, row))

    def per_call(row: tuple[Any, ...]) -> Any:
        return cel.evaluate(text, variables(expr, row))

    return {"once": once, "per-call": per_call}


def cands_google_cel(expr: str) -> dict[str, Bench]:
    from cel_expr_python import cel

    # Google's runtime resolves a dotted identifier to a variable declared with
    # the dotted name, so no nested maps are needed: one flat activation.
    names = INPUTS[expr]
    env = cel.NewEnv(variables={n: cel.Type.DYN for n in names})
    text = CEL[expr]
    compiled = env.compile(text)
    err = cel.Type.ERROR

    def once(row: tuple[Any, ...]) -> Any:
        value = compiled.eval(data=dict(zip(names, row, strict=True)))
        if value.type() == err:
            raise ArithmeticError(value.value())
        return value.value()

    def per_call(row: tuple[Any, ...]) -> Any:
        return env.compile(text).eval(data=dict(zip(names, row, strict=True))).value()

    return {"once": once, "per-call": per_call}


def cands_celpy(expr: str) -> dict[str, Bench]:
    import celpy

    text = CEL[expr]
    out: dict[str, Bench] = {}
    # the transpiling runner first: celpy caches its parser (and so the tree class
    # the first environment asked for) class-wide, and the transpiler needs its own
    for label, runner in (
        ("once, transpiled", celpy.CompiledRunner),
        ("once", celpy.InterpretedRunner),
    ):
        env = celpy.Environment(runner_class=runner)
        prog = env.program(env.compile(text))

        def run(row: tuple[Any, ...], prog: Any = prog) -> Any:
            return prog.evaluate(celpy.json_to_cel(variables(expr, row)))

        out[label] = run
    env1 = celpy.Environment()

    def per_call(row: tuple[Any, ...]) -> Any:
        return env1.program(env1.compile(text)).evaluate(celpy.json_to_cel(variables(expr, row)))

    out["per-call"] = per_call
    return out


def cands_simpleeval(expr: str) -> dict[str, Bench]:
    import simpleeval

    text = PY[expr]
    evaluator = simpleeval.EvalWithCompoundTypes()
    parsed = evaluator.parse(text)

    def once(row: tuple[Any, ...]) -> Any:
        evaluator.names = variables(expr, row)
        return evaluator.eval(text, previously_parsed=parsed)

    def per_call(row: tuple[Any, ...]) -> Any:
        return simpleeval.EvalWithCompoundTypes(names=variables(expr, row)).eval(text)

    return {"once": once, "per-call": per_call}


def cands_python(expr: str) -> dict[str, Bench]:
    fns: dict[str, Bench] = {
        "flat": lambda row: row[0] * row[1],
        "dotted": lambda row: row[0] * row[1],
        "score": lambda row: (
            (RANK[row[0]] + 1) * (3.0 if row[1] == 1 else 2.0 if row[1] == 2 else 1.0)
        ),
    }
    return {"once": fns[expr]}


def cands_stream(expr: str) -> dict[str, Bench]:
    from stream.expressions import compile_expression

    known = ("amount", "fx_rate", "enrichment.fx.rate", "severity", "tier")
    compiled = compile_expression(expr, CEL[expr], known)
    assert compiled.inputs == INPUTS[expr], compiled.inputs
    memo = compiled._memo

    def miss(row: tuple[Any, ...]) -> Any:
        memo.clear()  # every call a memo miss, as for a new amount
        return compiled.evaluate(row)

    hits = compile_expression(expr, CEL[expr], known)

    def hit(row: tuple[Any, ...]) -> Any:
        return hits.evaluate(row)  # after the warm-up round: every call a memo hit

    return {"evaluate, memo miss": miss, "evaluate, memo hit": hit}


CANDIDATES: list[tuple[str, Callable[[str], dict[str, Bench]]]] = [
    ("common-expression-language", cands_rust_cel),
    ("cel-expr-python", cands_google_cel),
    ("cel-python", cands_celpy),
    ("simpleeval", cands_simpleeval),
    ("python lambda (floor)", cands_python),
    ("stream.expressions", cands_stream),
]


# ---------------------------------------------------------------- timing


def time_per_call(
    fn: Bench, rows: Sequence[tuple[Any, ...]], repeat: int, warm_all: bool = False
) -> float:
    """Best-of-``repeat`` microseconds per call over ``rows``."""
    for row in rows if warm_all else rows[:50]:  # warm-up
        fn(row)
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        for row in rows:
            fn(row)
        best = min(best, time.process_time() - start)
    return best / len(rows) * 1e6


def time_batch(rows: Sequence[tuple[Any, ...]], expr: str, repeat: int) -> float | None:
    """``stream.expressions`` ``evaluate_many`` per row, every tuple distinct (memo misses)."""
    try:
        from stream.expressions import compile_expression
    except ImportError:
        return None
    known = ("amount", "fx_rate", "enrichment.fx.rate", "severity", "tier")
    best = float("inf")
    for _ in range(repeat):
        compiled = compile_expression(expr, CEL[expr], known)  # fresh memo each round
        gc.collect()
        start = time.process_time()
        compiled.evaluate_many(rows)
        best = min(best, time.process_time() - start)
    return best / len(rows) * 1e6


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    logging.getLogger("celpy").setLevel(logging.CRITICAL)  # it logs every failed evaluation

    def positive(text: str) -> int:
        value = int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
        return value

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--calls", type=positive, default=20_000, help="calls per measurement")
    ap.add_argument("--repeat", type=positive, default=5, help="best of N rounds")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--results-dir", default="benchmarks/results")
    args = ap.parse_args(argv)

    results: list[dict[str, Any]] = []
    for dist, factory in CANDIDATES:
        try:
            benches = {e: factory(e) for e in CEL}
        except ImportError as exc:
            print(f"skip {dist}: {exc}", file=sys.stderr)
            continue
        for mode in benches["flat"]:
            row: dict[str, Any] = {"library": dist, "version": version(dist), "mode": mode}
            for expr, by_mode in benches.items():
                # one-shot compilation is 10-1000x slower: fewer calls keep the run short
                calls = args.calls if mode != "per-call" else max(200, args.calls // 20)
                if dist == "cel-python":
                    calls = max(200, calls // 10)
                rows = make_rows(expr, calls, args.seed)
                expected = cands_python(expr)["once"]
                failed = False
                for sample in rows[:20]:
                    try:
                        got = by_mode[mode](sample)
                    except Exception as exc:  # a wrong answer is a finding, not a crash
                        if not failed:  # one note per expression
                            row.setdefault("notes", []).append(
                                f"{expr}: fails on {sample!r}: {type(exc).__name__}: {exc}"[:200]
                            )
                        failed = True
                        continue
                    assert abs(float(got) - expected(sample)) < 1e-9, (dist, mode, expr, got)
                if failed:  # time it on the inputs it can evaluate
                    rows = [r for r in rows if None not in r]
                warm_all = mode.endswith("memo hit")
                row[expr] = round(time_per_call(by_mode[mode], rows, args.repeat, warm_all), 3)
                row[f"{expr}_ok"] = not failed
            results.append(row)
            print(f"  {dist:28s} {mode:18s} done", file=sys.stderr)
    batch = {e: time_batch(make_rows(e, args.calls, args.seed), e, args.repeat) for e in CEL}
    if all(v is not None for v in batch.values()):
        results.append(
            {"library": "stream.expressions", "version": "", "mode": "evaluate_many (batch)"}
            | {e: round(v, 3) for e, v in batch.items() if v is not None}
        )

    print("\n| library | version | mode | flat µs | dotted µs | score µs |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in results:
        cells = [f"{r[e]:.2f}" + ("" if r.get(f"{e}_ok", True) else " (!)") for e in CEL]
        print(f"| {r['library']} | {r['version']} | {r['mode']} | " + " | ".join(cells) + " |")
    for r in results:
        for note in r.get("notes", []):
            print(f"(!) {r['library']} {r['mode']}: {note}")

    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"micro-expressions-{stamp}.json"
    doc = {
        "benchmark": "micro_expressions",
        "when": stamp,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg": os.getloadavg(),
        },
        "settings": {"calls": args.calls, "repeat": args.repeat, "seed": args.seed},
        "expressions": CEL,
        "unit": "microseconds of process CPU time per call",
        "rows": results,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
