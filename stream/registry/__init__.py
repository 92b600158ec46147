"""A real schema registry for development, tests and the demo, managed by the project.

Apicurio Registry (its Confluent-compatible API, ``/apis/ccompat/v7``) from Maven
Central, run on a local Java 21+ with in-memory storage — no Docker needed. It follows
:mod:`stream.localbroker`'s shape: cached download, one process per port, a pid file, a
log file, an idempotent ``start`` that waits until the API answers.
``STREAM_SCHEMA_REGISTRY_URL`` pointing at an existing registry (Confluent Schema
Registry, Apicurio's ccompat API, ...) makes all of this unnecessary.

    >>> from stream import registry
    >>> url = registry.start(port=8081)   # "http://127.0.0.1:8081/apis/ccompat/v7"
    >>> registry.status(8081).running
    True
    >>> registry.stop(8081)
    True
"""

from __future__ import annotations

from stream.registry.dist import REGISTRY_VERSION, ensure_distribution, find_java
from stream.registry.errors import (
    RegistryDownloadError,
    RegistryError,
    RegistryPortInUseError,
    RegistryPrerequisiteError,
    RegistryStartError,
)
from stream.registry.readiness import probe, wait_until_ready
from stream.registry.server import (
    API_PATH,
    DEFAULT_PORT,
    URL_ENV,
    RegistryStatus,
    external_url,
    local_url,
    start,
    status,
    stop,
)

__all__ = [
    "API_PATH",
    "DEFAULT_PORT",
    "REGISTRY_VERSION",
    "URL_ENV",
    "RegistryDownloadError",
    "RegistryError",
    "RegistryPortInUseError",
    "RegistryPrerequisiteError",
    "RegistryStartError",
    "RegistryStatus",
    "ensure_distribution",
    "external_url",
    "find_java",
    "local_url",
    "probe",
    "start",
    "status",
    "stop",
    "wait_until_ready",
]
