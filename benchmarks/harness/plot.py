"""The latency timeline PNG next to the results JSON (``benchmarks.latency_plot``).

matplotlib is not a dependency of the product. If this environment has it, the plot
is drawn in-process; otherwise in the bench-only virtual environment
``<STREAM_HOME>/peer-venvs/plot`` (``benchmarks/peers/requirements-plot.txt``, built on
first use like a Python peer's). If neither works (no network for pip, say) the plot is
skipped with a message saying why and how to draw it later; the run is not failed.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from benchmarks.harness.console import Console
from benchmarks.harness.systems import REPO, child_env
from benchmarks.latency_plot import draw, plot_path
from benchmarks.peers import envs

PLOT_TIMEOUT_S = 120.0


def write_latency_plot(results: Path, console: Console) -> Path | None:
    """Draw ``bench-<UTC>-latency.png`` for ``results``; its path, or None if skipped."""
    out = plot_path(results)
    try:
        if importlib.util.find_spec("matplotlib") is not None:
            import json

            draw(json.loads(results.read_text()), out)
        else:
            env = envs.python_env("plot", say=console.say)
            subprocess.run(
                [*env.command, str(results), str(out)],
                cwd=REPO,
                env=child_env(),
                check=True,
                capture_output=True,
                timeout=PLOT_TIMEOUT_S,
            )
    except (envs.PeerUnavailable, subprocess.SubprocessError, OSError, ValueError) as exc:
        console.say(
            f"latency plot skipped: {exc} (draw it later with matplotlib installed: "
            f"python -m benchmarks.latency_plot {results})"
        )
        return None
    console.say(f"latency plot: {out}")
    return out
