"""Draw the latency timeline of a ``stream bench`` results file as a PNG.

    python -m benchmarks.latency_plot benchmarks/results/bench-<UTC>.json [out.png]

One line per row that had a latency run (ceiling, stream, kstreams, ...): the p99 of
each second of offered load (by produce time, ``latency_ms.timeline``), with the run's
whole-run and steady-state (after 2 s) p99 in the legend. Written next to the JSON as
``bench-<UTC>-latency.png`` unless a path is given.

Imports only the standard library and matplotlib (Agg backend), so it runs in the
bench-only virtual environment ``stream bench`` builds for it
(``benchmarks/peers/requirements-plot.txt``) as well as in any environment that has
matplotlib. Not imported by the product.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLOURS = {"ceiling": "#7f7f7f", "stream": "#1f77b4", "kstreams": "#d62728", "quix": "#2ca02c"}


def plot_path(results: Path) -> Path:
    return results.with_name(f"{results.stem}-latency.png")


def draw(document: dict[str, Any], out: Path) -> list[str]:
    """Write the PNG; the names of the rows drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in document["rows"] if (r.get("latency_ms") or {}).get("timeline")]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for row in rows:
        lat = row["latency_ms"]
        timeline = lat["timeline"]
        steady = lat.get("steady_p99")
        label = f"{row['name']} (p99 {lat['p99']:,.0f} ms" + (
            f", steady {steady:,.0f} ms)" if steady is not None else ")"
        )
        ax.plot(
            [s["t"] for s in timeline],
            [s["p99"] for s in timeline],
            marker="o",
            markersize=3,
            label=label,
            color=COLOURS.get(row["name"]),
        )
    rate = next((r["latency_ms"]["offered_rate"] for r in rows), 0)
    ax.set_xlabel("second of offered load (by produce time)")
    ax.set_ylabel("p99 end-to-end latency, ms")
    ax.set_yscale("log")
    ax.axvspan(-0.5, 1.5, color="#f0e0c0", alpha=0.4, label="start (excluded from steady p99)")
    load = document.get("load_average", {})
    ax.set_title(
        f"stream bench latency at {rate:,.0f} events/s — {document.get('started_at', '')} "
        f"(load avg before {load.get('before', ['?'])[0]})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return [r["name"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(args[0])
    out = Path(args[1]) if len(args) > 1 else plot_path(results)
    drawn = draw(json.loads(results.read_text()), out)
    print(json.dumps({"png": str(out), "rows": drawn}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
