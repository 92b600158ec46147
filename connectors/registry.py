"""Connectors by name or URL scheme, imported only when asked for.

Like Faust's ``memory://`` / ``rocksdb://`` drivers: configuration names a
connector (``postgres``, ``file``, ``csv``) or gives a URL whose scheme names
it (``postgresql://user@db/app``, ``file:///data/out``). Entries are
``"module:attribute"`` strings, so listing or resolving a name imports nothing
until that connector is actually built, and a connector's optional dependency
(psycopg, pyarrow) is needed only by users of that connector.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Generic, TypeVar, cast

from connectors.base import Sink, Source
from connectors.mapping import ColumnMapping
from stream.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name (and alias) -> lazily imported class."""

    def __init__(self, kind: str, base: type) -> None:
        self.kind = kind
        self._base = base
        self._targets: dict[str, str] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, target: str, aliases: Iterable[str] = ()) -> None:
        """Register ``target`` (``"package.module:Class"``) under ``name`` and ``aliases``."""
        if ":" not in target:
            raise ValueError(f"target must look like 'module:attribute', got {target!r}")
        for key in (name, *aliases):
            self._targets[key.lower()] = target
            self._canonical[key.lower()] = name

    def names(self) -> list[str]:
        """Canonical names, sorted (aliases left out)."""
        return sorted(set(self._canonical.values()))

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` or one of its aliases."""
        key = name.lower()
        if key not in self._canonical:
            raise ConfigError(
                self.kind, f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            )
        return self._canonical[key]

    def load(self, name: str) -> type[T]:
        """Import and return the class registered as ``name``."""
        target = self._targets[self.canonical(name).lower()]
        module_name, _, attribute = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        if not (isinstance(cls, type) and issubclass(cls, self._base)):
            raise TypeError(f"{target} is not a {self._base.__name__}")
        return cast("type[T]", cls)

    def for_url(self, url: str) -> type[T]:
        """The class named by ``url``'s scheme (``postgresql://...`` -> the postgres entry)."""
        scheme, sep, _ = url.partition("://")
        if not sep:
            raise ConfigError(self.kind, f"{url!r} has no scheme (expected e.g. postgres://...)")
        return self.load(scheme)


SINKS: Registry[Sink] = Registry("sink", Sink)
SINKS.register("postgres", "connectors.postgres_sink:PostgresSink", aliases=("postgresql",))
SINKS.register("file", "connectors.file_sink:FileSink")

SOURCES: Registry[Source] = Registry("source format", Source)
SOURCES.register("csv", "connectors.csv_source:CsvSource", aliases=("tsv",))
SOURCES.register("ndjson", "connectors.json_source:NdjsonSource", aliases=("jsonl",))
SOURCES.register("json", "connectors.json_source:JsonSource")
SOURCES.register("parquet", "connectors.parquet_source:ParquetSource", aliases=("pq",))


def source_format(path: Path, explicit: str | None = None) -> str:
    """The source format for ``path``: ``explicit`` if given, else from the file extension."""
    if explicit:
        return SOURCES.canonical(explicit)
    suffix = path.suffix.lstrip(".").lower()
    if not suffix:
        raise ConfigError(
            "--format", f"cannot tell the format of {path} (no extension); pass --format"
        )
    try:
        return SOURCES.canonical(suffix)
    except ConfigError:
        raise ConfigError(
            "--format",
            f"cannot tell the format of {path} from '.{suffix}'; pass --format "
            f"({', '.join(SOURCES.names())})",
        ) from None


def open_source(
    path: Path, mapping: ColumnMapping, fmt: str | None = None, *, delimiter: str | None = None
) -> Source:
    """Build the source for ``path`` (format from ``fmt`` or the extension)."""
    name = source_format(path, fmt)
    cls = SOURCES.load(name)
    if name == "csv":
        if delimiter is None and fmt == "tsv":
            delimiter = "\t"
        return cls(path, mapping, delimiter=delimiter)  # type: ignore[call-arg]
    if delimiter is not None:
        raise ConfigError("--delimiter", f"only applies to CSV files, not {name} ({path})")
    return cls(path, mapping)  # type: ignore[call-arg]
