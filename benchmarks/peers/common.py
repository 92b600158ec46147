"""What every peer pipeline shares, so the peers differ only in their framework.

Each peer runs the same logic, written the way that framework's documentation
shows it (per-record functions, dict rows):

* **validate** with the project's own contract decoder
  (``stream.pipelines.observability.event_decoder``,
  msgspec) plus the same event-time bounds as ``stream.stages.validate``
  (not before 2000, not more than 24 h ahead). Using the same decoder keeps
  the ground truth identical (the generator's ``valid`` flag) and measures the
  framework, not a slower validator: msgspec costs ~0.5 µs an event.
* **enrich** from a static reference dict (``--reference-json``, written by
  ``stream loadgen --reference-json``); score = (severity rank + 1) x tier
  weight, tiers 1/2/3 weigh 3/2/1 and unknown services 1 — as ``stream.stages.enrich``.
* **correlate**: error|critical events per source in a 60 s tumbling event-time
  window; a correlation when the count reaches 5.

``Tally`` keeps the counts and the wall time from the first input record to
the last output, and ``Tally.line`` is the one JSON line a peer prints.

A peer runs in its own virtual environment (``benchmarks/peers/envs.py``) with the
repository on ``PYTHONPATH``: this module and the peers may import only the standard
library, msgspec, their framework and ``stream.pipelines.observability`` (msgspec
only), not the harness, whose package pulls in the product's dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from stream.pipelines.observability import SEVERITY_RANK, event_decoder

ERROR_SEVERITIES: Final = frozenset({"error", "critical"})
RULE_NAME: Final = "errors_per_source"
MIN_EVENT_TIME_MS: Final = 946_684_800_000  # 2000-01-01, as stream.stages.validate
MAX_FUTURE_MS: Final = 24 * 3600 * 1000
TIER_WEIGHTS: Final = {1: 3.0, 2: 2.0, 3: 1.0}


def parse_args(peer: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.peers.{peer}",
        description=(
            "The validate -> enrich -> correlate benchmark pipeline written for "
            f"{peer}. Stops after --expect input records and prints one JSON line."
        ),
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--input", required=True, help="input topic (the events)")
    parser.add_argument("--enriched", required=True, help="topic for enriched events")
    parser.add_argument("--correlations", required=True, help="topic for correlations")
    parser.add_argument("--dlq", required=True, help="dead-letter topic for invalid records")
    parser.add_argument("--group", required=True, help="consumer group (use a fresh one)")
    parser.add_argument("--expect", type=int, required=True, help="input records to process")
    parser.add_argument(
        "--reference-json", type=Path, help="{service: {team, tier, owner}} (default: none)"
    )
    parser.add_argument("--window-ms", type=int, default=60_000, help="window size (60000)")
    parser.add_argument("--threshold", type=int, default=5, help="errors per window (5)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up after this many seconds (600)"
    )
    return parser.parse_args(argv)


def load_reference(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


def own_peak_rss_bytes() -> int:
    """This process's peak RSS, reported on exit: the harness may only ever sample a
    short-lived peer as an exited zombie. ``VmHWM`` of ``/proc/self``; ``ru_maxrss`` only
    as a fallback, since Linux carries it across ``execve`` from the (large) harness that
    started the peer (see ``benchmarks.harness.procstats.own_peak_rss_bytes``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def reserve_stdout() -> TextIO:
    """Keep the real stdout for the result line; anything else printed goes to stderr."""
    sys.stdout.flush()
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return result


def parse_event(raw: bytes | None) -> dict[str, Any] | None:
    """The event as a dict with ``event_time_ms`` added, or None if it breaks the contract."""
    if not raw:
        return None
    try:
        event = event_decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    event_time = event.event_time_ms()
    if not MIN_EVENT_TIME_MS <= event_time <= time.time() * 1000 + MAX_FUTURE_MS:
        return None
    row: dict[str, Any] = msgspec.to_builtins(event)
    row["event_time_ms"] = event_time
    return row


def enrich(row: dict[str, Any], reference: dict[str, dict[str, Any]]) -> dict[str, Any]:
    info = reference.get(row["source"])
    rank = SEVERITY_RANK[row["severity"]] + 1
    if info is None:
        row["enrichment"] = {"known_service": False, "score": float(rank)}
    else:
        tier = info.get("tier")
        row["enrichment"] = {
            "known_service": True,
            "score": rank * TIER_WEIGHTS.get(tier, 1.0) if tier is not None else float(rank),
            "team": info.get("team"),
            "tier": tier,
            "owner": info.get("owner"),
        }
    return row


def correlation(source: str, start_ms: int, end_ms: int, count: int) -> dict[str, Any]:
    return {
        "rule": RULE_NAME,
        "kind": "threshold",
        "group": {"source": source},
        "window_start": start_ms,
        "window_end": end_ms,
        "aggregate": "count",
        "value": float(count),
        "count": count,
    }


@dataclass
class Tally:
    """Counts of one run and its wall time from first input record to last output."""

    peer: str
    expect: int
    events: int = 0
    valid: int = 0
    dlq: int = 0
    correlations: int = 0
    first: float | None = None
    last: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def saw_input(self) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.events += 1
        self.last = now

    def done_at(self) -> None:
        self.last = time.monotonic()

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first

    def line(self) -> str:
        seconds = self.seconds
        return json.dumps(
            {
                "peer": self.peer,
                "events": self.events,
                "seconds": round(seconds, 3),
                "events_per_s": round(self.events / seconds, 1) if seconds > 0 else 0.0,
                "valid": self.valid,
                "dlq": self.dlq,
                "correlations": self.correlations,
                "peak_rss_bytes": own_peak_rss_bytes(),
                **self.extra,
            }
        )
