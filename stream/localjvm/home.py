"""Where local services keep their downloads and data: ``$STREAM_HOME`` or ``./.stream``.

Relative to the working directory, so each checkout has its own broker and registry and a
``rm -r .stream`` resets them (Maven's ``~/.m2`` still holds what was downloaded).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "STREAM_HOME"
DEFAULT_HOME = ".stream"


def resolve_home(home: Path | str | None = None) -> Path:
    """The state directory, absolute: ``home``, else ``$STREAM_HOME``, else ``./.stream``."""
    chosen = home if home is not None else (os.environ.get(HOME_ENV) or DEFAULT_HOME)
    return Path(chosen).expanduser().resolve()
