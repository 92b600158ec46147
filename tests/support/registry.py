"""A local Apicurio Registry for tests (:mod:`stream.registry`), shared by the registry
and the formats test modules: each fixture picks its own scope and storage."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream import registry
from stream.localbroker import free_port_pair


@dataclass(frozen=True)
class LocalRegistry:
    port: int
    home: Path
    app: Path
    url: str


def running_registry(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, persistent: bool = False
) -> Iterator[LocalRegistry]:
    """Start a registry on a free port (the distribution from the shared ``$STREAM_HOME``
    cache, so it is downloaded once per machine), yield it, stop it."""
    app = registry.ensure_distribution()
    home = tmp_path_factory.mktemp(name)
    port = free_port_pair()
    url = registry.start(port, home, app=app, persistent=persistent)
    yield LocalRegistry(port, home, app, url)
    registry.stop(port, home)
