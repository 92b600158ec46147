"""Optional dependencies, imported only by the connector that needs them.

psycopg and pyarrow are extras (``pip install 'stream-processor[postgres]'``,
``[parquet]``); a user who never touches PostgreSQL or Parquet must not need
them. A missing one fails with the exact install command instead of an
``ImportError`` traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stream.errors import FatalError


class MissingDependencyError(FatalError):
    """A connector needs a package that is not installed; the message says how to install it."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 'stream-processor[{extra}]'"
        )
        self.module = module
        self.extra = extra


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name is not None and exc.name.partition(".")[0] == top:
            raise MissingDependencyError(top, extra, purpose) from None
        raise
