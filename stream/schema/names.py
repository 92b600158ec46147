"""Python attribute names for JSON property names.

JSON allows any string as a property name; a Struct field needs an identifier
that is not a keyword and does not start with ``__`` (msgspec reserves those).
Other names get a safe attribute (``order-id`` -> ``order_id``, ``class`` ->
``class_``, ``2fa`` -> ``f_2fa``) and the Struct is built with
``rename={attr: json_name}``, so decoding, msgspec's error paths
(``$.order-id``) and the DLQ keep the JSON names.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

_INVALID = re.compile(r"\W", re.ASCII)


def safe_attr(name: str) -> str:
    """A valid, non-keyword attribute name close to ``name`` (not yet de-duplicated)."""
    plain = name.isidentifier() and name.isascii() and not keyword.iskeyword(name)
    if plain and not name.startswith("__"):
        return name
    attr = _INVALID.sub("_", name)
    if not attr or attr[0].isdigit() or attr.startswith("__"):
        attr = "f_" + attr
    if keyword.iskeyword(attr):
        attr += "_"
    return attr


def assign_attrs(names: Iterable[str]) -> dict[str, str]:
    """``{json_name: attr}`` with unique attributes; names that are fine keep themselves."""
    names = list(names)
    taken = {n for n in names if safe_attr(n) == n}
    out: dict[str, str] = {}
    for name in names:
        attr = safe_attr(name)
        if attr != name:
            base, n = attr, 2
            while attr in taken:
                attr = f"{base}_{n}"
                n += 1
            taken.add(attr)
        out[name] = attr
    return out
