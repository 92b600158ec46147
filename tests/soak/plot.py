"""Draw ``soak.png`` (RSS and lag over time) from a soak run's ``samples.csv``.

    python tests/soak/plot.py samples.csv soak.png

Standard library and matplotlib only (Agg), so it runs in any environment that has
matplotlib, e.g. the bench-only plot environment ``<STREAM_HOME>/peer-venvs/plot``.
"""

from __future__ import annotations

import csv
import sys


def main(samples: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(samples, newline="") as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t"]) / 60 for r in rows]
    fig, (rss, lag) = plt.subplots(2, 1, figsize=(9, 6), dpi=110, sharex=True)
    rss.plot(t, [float(r["rss_mb"]) for r in rows], color="#1f77b4")
    rss.set_ylabel("worker RSS (MB)")
    rss.set_ylim(bottom=0)
    keys = rss.twinx()
    keys.plot(t, [float(r["state_keys"]) for r in rows], color="#7f7f7f", linestyle=":")
    keys.set_ylabel("live window keys", color="#7f7f7f")
    keys.set_ylim(bottom=0)
    lag.plot(t, [float(r["lag"]) for r in rows], color="#d62728")
    lag.set_ylabel("consumer lag (records)")
    lag.set_xlabel("minutes")
    lag.set_ylim(bottom=0)
    fig.suptitle("soak: worker RSS and lag (distinct keys growing over the run)")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
