"""Load generator: synthetic events for sizing, verifying and benchmarking a deployment.

``generator`` is pure (no I/O) and deterministic per seed, so a test can know
exactly which records are valid. ``producer`` sends them to Kafka at a
controlled rate from one or several processes; ``cli`` is ``stream loadgen``.
"""

from stream.loadgen.generator import (
    INVALID_KINDS,
    Block,
    EventGenerator,
    GeneratedRecord,
    GeneratorConfig,
    generate,
)
from stream.loadgen.reference import reference_data, service_name

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
