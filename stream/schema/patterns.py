"""JSON Schema ``pattern`` (ECMA-262 regex) to a Python ``re`` pattern for msgspec.

msgspec checks ``Meta(pattern=...)`` with Python's ``re.search``; unanchored like
JSON Schema. Two differences matter for validation and are translated:

- ``$`` outside a character class: ECMA matches only at the end of the input,
  Python also before a final newline (``^a$`` would accept ``"a\\n"``) -> ``\\Z``;
- ``\\d``: ECMA means ASCII digits only, Python any Unicode digit -> ``[0-9]``
  (``0-9`` inside a class; ``\\D`` outside one -> ``[^0-9]``).

Other differences (``\\w``/``\\s`` Unicode classes, ECMA-only syntax such as
``\\cX`` or ``\\u{...}``) are left alone; a pattern Python cannot compile is
refused when the schema is compiled.
"""

from __future__ import annotations

import re


def ecma_to_python(pattern: str) -> str:
    """The Python spelling of ECMA-262 ``pattern`` (see the module docstring)."""
    out: list[str] = []
    in_class = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif nxt == "D" and not in_class:
                out.append("[^0-9]")
            else:
                out.append(c + nxt)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a leading "]" or "^]" is a literal in Python (ECMA: empty class); keep as is
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            continue
        elif c == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> str:
    """Translate and check that Python can compile it; ``re.error`` otherwise."""
    translated = ecma_to_python(pattern)
    re.compile(translated)
    return translated
