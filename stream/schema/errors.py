"""The one error a schema can raise: :class:`SchemaError`.

A schema is configuration, so a schema that cannot be compiled is a
:class:`~stream.errors.ConfigError` and fails the worker at start-up. The message
names the file, the JSON pointer inside it and the keyword, because "schema
invalid" in a 300-line schema is no help::

    invalid configuration: schema orders.schema.json: /properties/items/items/properties/qty:
    keyword 'multipleOf' is not supported
"""

from __future__ import annotations

from stream.errors import ConfigError


class SchemaError(ConfigError):
    """A schema that cannot be compiled (unsupported keyword, bad value, unreadable file).

    ``pointer`` is the RFC 6901 JSON pointer of the offending subschema (``""`` for
    the document root); ``keyword`` the keyword at fault, or ``None`` when the whole
    subschema or file is.
    """

    def __init__(self, source: str, pointer: str, keyword: str | None, reason: str) -> None:
        where = pointer if pointer else "(root)"
        super().__init__(f"schema {source}", f"{where}: {reason}")
        self.source = source
        self.pointer = pointer
        self.keyword = keyword


def unsupported(source: str, pointer: str, keyword: str) -> SchemaError:
    """The standard refusal of a keyword the compiler does not implement."""
    return SchemaError(source, pointer, keyword, f"keyword {keyword!r} is not supported")


def pointer_join(pointer: str, *tokens: str | int) -> str:
    """``pointer`` extended by ``tokens``, escaped as RFC 6901 requires (``~0``, ``~1``)."""
    parts = [str(t).replace("~", "~0").replace("/", "~1") for t in tokens]
    return pointer + "".join("/" + p for p in parts)
