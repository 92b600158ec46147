"""Pipeline files shipped with the package.

``observability.yaml`` (with ``observability.schema.json``) is the bundled pipeline:
what a worker runs without ``--config``, and the base a pipeline file without its own
schema is layered on. ``demo.yaml`` is what ``stream demo`` runs; ``orders.yaml`` is
an example of a pipeline for another event shape.
"""

from pathlib import Path

PIPELINES_DIR = Path(__file__).parent
DEFAULT_PIPELINE = PIPELINES_DIR / "observability.yaml"
DEMO_PIPELINE = PIPELINES_DIR / "demo.yaml"
