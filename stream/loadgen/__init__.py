"""Load generator: synthetic events for sizing, verifying and benchmarking a deployment.

``generator`` is pure (no I/O) and deterministic per seed, so a test can know
exactly which records are valid; ``reference`` is the matching reference data.
``producer`` sends records to Kafka at a controlled rate from one or several
processes, ``broker`` checks the cluster and seeds reference data, and ``cli`` is
``stream loadgen``. The names below are imported on first use, so registering the
command (``stream --help``) does not pay for the generator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.loadgen.generator import (
        INVALID_KINDS,
        Block,
        EventGenerator,
        GeneratedRecord,
        GeneratorConfig,
        generate,
    )
    from stream.loadgen.reference import reference_data, service_name

_EXPORTS = {
    "INVALID_KINDS": "stream.loadgen.generator",
    "Block": "stream.loadgen.generator",
    "EventGenerator": "stream.loadgen.generator",
    "GeneratedRecord": "stream.loadgen.generator",
    "GeneratorConfig": "stream.loadgen.generator",
    "generate": "stream.loadgen.generator",
    "reference_data": "stream.loadgen.reference",
    "service_name": "stream.loadgen.reference",
}

__all__ = [
    "INVALID_KINDS",
    "Block",
    "EventGenerator",
    "GeneratedRecord",
    "GeneratorConfig",
    "generate",
    "reference_data",
    "service_name",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream.loadgen' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
