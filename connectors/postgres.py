"""Shared PostgreSQL plumbing: connecting, naming tables, and sorting errors.

Needs psycopg 3 (``pip install 'stream-processor[postgres]'``), imported on
first use so the rest of the processor never needs it.

Errors are sorted once, here, because the answer decides what callers do:

* connection trouble (server down or restarting, network, a transaction
  aborted by a deadlock or serialization failure) is a
  :class:`~stream.errors.TransientError` — retried, counted by circuit
  breakers, and the work is kept;
* anything else (missing privileges, a table with an incompatible schema,
  bad SQL) is a :class:`~stream.errors.FatalError`: retrying cannot fix it.

Messages never contain the password of the DSN.
"""

from __future__ import annotations

import re
from typing import Any, Final

from connectors.optional import require
from stream.errors import ConfigError, FatalError, TransientError

APPLICATION_NAME: Final = "stream-processor"
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@]*:)[^@]*@")
_PASSWORD_KEYWORD: Final = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def psycopg() -> Any:
    """The psycopg module, or a one-line install hint."""
    return require("psycopg", extra="postgres", purpose="the PostgreSQL connectors")


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URL or key=value form)."""
    return _PASSWORD_KEYWORD.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", dsn))


def table_name(name: str) -> tuple[str, ...]:
    """``table`` or ``schema.table`` as identifier parts; refuses anything else.

    Plain identifiers only, so a table name from configuration can never carry SQL.
    """
    parts = tuple(name.split("."))
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        raise ConfigError("--table", f"{name!r} is not a table name (table or schema.table)")
    return parts


def connect(dsn: str, *, timeout: float = 5.0, autocommit: bool = False) -> Any:
    """Open a connection, or raise TransientError (unreachable) / FatalError (refused)."""
    pg = psycopg()
    try:
        return pg.connect(
            dsn,
            connect_timeout=max(1, round(timeout)),
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
        )
    except pg.Error as exc:
        raise classify(exc, f"cannot connect to PostgreSQL at {redact_dsn(dsn)}") from None


def classify(exc: BaseException, doing: str) -> TransientError | FatalError:
    """The project error for a psycopg error raised while ``doing`` something."""
    pg = psycopg()
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = f"{doing}: {detail}"
    if isinstance(exc, pg.OperationalError | pg.InterfaceError):
        if isinstance(exc, pg.errors.InvalidPassword | pg.errors.InvalidAuthorizationSpecification):
            return FatalError(message)
        return TransientError(message)
    return FatalError(message)
