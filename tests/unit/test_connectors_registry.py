"""Connector registry (names, aliases, URL schemes, lazy imports) and optional-dependency hints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from connectors.base import Sink
from connectors.keys import KEY_FUNCTIONS
from connectors.optional import MissingDependencyError, require
from connectors.registry import SINKS, SOURCES, Registry, source_format
from stream.commands.ingest import KEY_CHOICES
from stream.errors import ConfigError, FatalError


def test_sinks_resolve_by_name_alias_and_url_scheme() -> None:
    assert SINKS.names() == ["file", "postgres"]
    postgres = SINKS.load("postgres")
    assert postgres.__name__ == "PostgresSink"
    assert SINKS.load("PostgreSQL") is postgres
    assert SINKS.for_url("postgresql://u@db:5432/app") is postgres
    assert SINKS.for_url("file:///data/out").__name__ == "FileSink"


def test_unknown_names_and_urls_without_scheme_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown sink 'mysql'; known: file, postgres"):
        SINKS.load("mysql")
    with pytest.raises(ConfigError, match="has no scheme"):
        SINKS.for_url("/data/out")


def test_registering_is_lazy_and_checks_the_type_on_load() -> None:
    registry: Registry[Sink] = Registry("sink", Sink)
    registry.register("nothing", "no_such_module_anywhere:Thing")  # not imported yet
    assert registry.names() == ["nothing"]
    with pytest.raises(ModuleNotFoundError):
        registry.load("nothing")
    registry.register("path", "pathlib:Path")
    with pytest.raises(TypeError, match="is not a Sink"):
        registry.load("path")
    with pytest.raises(ValueError, match="module:attribute"):
        registry.register("bad", "no-colon")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", "csv"),
        ("a.TSV", "csv"),
        ("a.ndjson", "ndjson"),
        ("a.jsonl", "ndjson"),
        ("a.json", "json"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_source_format_from_extension(name: str, expected: str) -> None:
    assert source_format(Path(name)) == expected


def test_source_format_explicit_wins_and_unknown_extensions_say_what_to_do() -> None:
    assert source_format(Path("data.txt"), "ndjson") == "ndjson"
    with pytest.raises(ConfigError, match=r"from '\.txt'; pass --format \(csv, json"):
        source_format(Path("data.txt"))
    with pytest.raises(ConfigError, match="no extension"):
        source_format(Path("data"))
    assert sorted(SOURCES.names()) == ["csv", "json", "ndjson", "parquet"]


def test_missing_optional_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ModuleNotFoundError
    with pytest.raises(MissingDependencyError) as info:
        require("psycopg", extra="postgres", purpose="the PostgreSQL sink")
    assert isinstance(info.value, FatalError)
    assert str(info.value) == (
        "the PostgreSQL sink needs the Python package 'psycopg', which is not installed; "
        "install it with: pip install 'stream-processor[postgres]'"
    )


def test_postgres_sink_without_psycopg_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependencyError, match=r"\[postgres\]"):
        SINKS.load("postgres")("postgresql://x@y/z")  # type: ignore[call-arg]


def test_cli_key_choices_match_the_key_functions() -> None:
    assert set(KEY_CHOICES) == set(KEY_FUNCTIONS)
