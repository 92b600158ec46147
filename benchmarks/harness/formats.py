"""``stream bench --format avro``: the ``stream-avro`` row beside ``stream``.

The same generated events (same seed, count and invalid ratio, so the same ground truth)
go to a second input topic framed as Avro by the load generator (``stream loadgen
--format avro``: the schema registered under ``<topic>-value``; records Avro cannot
express go out unframed and are dead-lettered as ``bad_framing``). One ``stream worker``
runs the bundled pipeline plus ``format: avro`` over it, writing JSON as the ``stream``
row does, so the two rows differ only in the input decoding; the row is checked like
``stream`` (enriched == valid, DLQ == invalid).

The registry is ``$STREAM_SCHEMA_REGISTRY_URL`` when set, otherwise a local Apicurio
Registry (:mod:`stream.registry`, as ``stream registry start`` runs it) on a free port,
in memory, stopped at the end of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

#: The input formats ``--format`` may add a row for, and each one's row name.
FORMAT_ROWS: Final = {"avro": "stream-avro"}


@contextmanager
def registry_session(home: Path) -> Iterator[str]:
    """The registry URL for the run: the external one, or a local one started here."""
    from stream import registry
    from stream.localbroker import free_port_pair

    external = registry.external_url()
    if external:
        yield external
        return
    port = free_port_pair()
    url = registry.start(port, home, app=registry.ensure_distribution())
    try:
        yield url
    finally:
        registry.stop(port, home)


def write_format_pipeline(path: Path, fmt: str, registry_url: str) -> Path:
    """The bundled pipeline (no schema of its own: layered on it) reading ``fmt``; the
    row's topics come from the ``STREAM_TOPICS__*`` variables, as for ``stream``."""
    spec = {
        "pipeline": f"observability-{fmt}",
        "format": fmt,
        "schema_registry": {"url": registry_url},
    }
    path.write_text(json.dumps(spec, indent=2))  # JSON is YAML
    return path
