"""Example pipeline files shipped with the package (``stream demo`` uses ``demo.yaml``)."""

from pathlib import Path

PIPELINES_DIR = Path(__file__).parent
DEMO_PIPELINE = PIPELINES_DIR / "demo.yaml"
