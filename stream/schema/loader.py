"""Reading a schema file named by a pipeline file.

JSON is the format JSON Schema is written in; YAML (``.yaml``/``.yml``) is accepted
because pipeline files are YAML. Relative paths are taken from the pipeline file's
directory, so a pipeline and its schema can move together. Any failure to read or
parse becomes a :class:`SchemaError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stream.schema.compiler import compile_json_schema
from stream.schema.errors import SchemaError
from stream.schema.model import CompiledSchema


def resolve_schema_path(path: Path, relative_to: Path | None = None) -> Path:
    """``path`` as given if absolute, else relative to ``relative_to`` (a directory, or
    a file whose directory is meant)."""
    path = Path(path)
    if path.is_absolute() or relative_to is None:
        return path
    base = Path(relative_to)
    if base.is_file():
        base = base.parent
    return base / path


def read_schema_document(path: Path, *, relative_to: Path | None = None) -> Any:
    """The parsed document (not yet compiled)."""
    full = resolve_schema_path(path, relative_to)
    source = str(path)
    try:
        text = full.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(source, "", None, f"cannot read {full}: {exc}") from None
    try:
        if full.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "YAML" if full.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise SchemaError(source, "", None, f"{full} is not valid {kind}: {exc}") from None


def load_schema_file(path: Path, *, relative_to: Path | None = None) -> CompiledSchema:
    """Read and compile the JSON Schema file at ``path``."""
    doc = read_schema_document(path, relative_to=relative_to)
    return compile_json_schema(doc, source=str(path))
