"""Micro-benchmark of the correlate stage alone (no Kafka, no decoding).

Builds synthetic events once (200 sources, 4 partitions, event time advancing
~1 ms per event with up to 2 s of disorder, by default 10% error / 5% critical
— ``--error-share 1`` makes every event match the default rule), then
times ``Correlator.process`` over batches of ``--batch`` events plus a
``drain_changes`` checkpoint every ``--checkpoint-every`` events, and prints
events/s and microseconds per event, by wall clock and by this process's CPU
time (the latter is the stable number on a shared machine). The budget for the default rule set is
about 1.5 us/event on the 2-core development machine.

    PYTHONPATH=. python benchmarks/micro_correlate.py --events 1000000
    PYTHONPATH=. python benchmarks/micro_correlate.py --rules all   # every rule kind
    # a sequence rule with an unselective step (every error within 30 s), as in
    # `stream demo`, at 20k events per second of event time
    PYTHONPATH=. python benchmarks/micro_correlate.py --rules sequence --rate 20000 --sources 10 \
        --events 1500000
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from stream.pipelines.observability import Event
from stream.stages.correlate import Correlator
from stream.windows.spec import DEFAULT_RULES, RuleSpec, parse_rules

ALL_KINDS = {
    "rules": [
        {
            "name": "error-burst",
            "kind": "threshold",
            "match": {"severity": ["error", "critical"]},
            "group_by": ["source"],
            "window": {"type": "tumbling", "size": "60s", "grace": "10s"},
            "when": ">= 5",
        },
        {
            "name": "latency-p-max",
            "kind": "threshold",
            "match": {"type": "request"},
            "group_by": ["source"],
            "window": {"type": "hopping", "size": "5m", "advance": "1m"},
            "aggregate": "max(value)",
            "when": "> 900",
        },
        {
            "name": "error-ratio",
            "kind": "ratio",
            "group_by": ["source"],
            "window": {"type": "tumbling", "size": "5m"},
            "numerator": {"severity_at_least": "error"},
            "when": "> 0.2",
            "min_volume": 50,
        },
        {
            "name": "latency-anomaly",
            "kind": "anomaly",
            "match": {"type": "request"},
            "group_by": ["source"],
            "window": {"type": "tumbling", "size": "1m"},
            "aggregate": "avg(value)",
            "k": 4,
        },
        {
            "name": "user-sessions",
            "kind": "threshold",
            "match": {"type": "login"},
            "group_by": ["entity"],
            "window": {"type": "session", "gap": "30s"},
            "when": ">= 20",
        },
        {
            "name": "deploy-then-errors",
            "kind": "sequence",
            "group_by": ["source"],
            "steps": [
                {"match": {"type": "deploy"}},
                {"match": {"severity": "critical"}, "min_count": 3},
            ],
            "within": "5m",
        },
    ]
}

#: The demo's ``deploy-then-errors`` shape: step 2 matches every error, so the
#: groups buffer every error of the last 30 s (``--rate 20000``: ~60k events).
SEQUENCE = {
    "rules": [
        {
            "name": "deploy-then-errors",
            "kind": "sequence",
            "group_by": ["source"],
            "steps": [
                {"match": {"type": "deploy"}},
                {"match": {"severity": "error"}, "min_count": 3},
            ],
            "within": "30s",
        }
    ]
}
PRESETS: dict[str, dict[str, Any]] = {"all": ALL_KINDS, "sequence": SEQUENCE}

TYPES = ["request"] * 80 + ["login"] * 15 + ["job"] * 5


def severities(error_share: float) -> list[str]:
    """100 severities of which ``error_share`` are error/critical (2:1), the rest info/warning."""
    bad = round(error_share * 100)
    errors = bad * 2 // 3
    return (
        ["error"] * errors
        + ["critical"] * (bad - errors)
        + ["info", "warning"] * ((100 - bad) // 2)
        + ["info"] * ((100 - bad) % 2)
    )


def synthetic(
    n: int,
    partitions: int,
    error_share: float = 0.15,
    seed: int = 7,
    rate: int = 1000,
    sources: int = 200,
) -> list[tuple[list[Event], list[int]]]:
    rng = random.Random(seed)
    mix = severities(error_share)
    streams: list[tuple[list[Event], list[int]]] = [([], []) for _ in range(partitions)]
    t0 = 1_700_000_000_000
    for i in range(n):
        t = t0 + i * 1000 // rate - rng.randrange(0, 2_000)
        kind = "deploy" if rng.random() < 0.0005 else rng.choice(TYPES)
        event = Event(
            event_id=f"ev-{i}",
            type=kind,
            source=f"svc-{rng.randrange(sources)}",
            timestamp=t,
            severity=rng.choice(mix),  # type: ignore[arg-type]
            entity=f"user-{rng.randrange(5000)}",
            value=rng.random() * 1000,
        )
        events, times = streams[i % partitions]
        events.append(event)
        times.append(t)
    return streams


def run(rules: Sequence[RuleSpec], n: int, args: argparse.Namespace) -> None:
    batch, partitions, checkpoint_every = args.batch, args.partitions, args.checkpoint_every
    error_share, rate = args.error_share, args.rate
    streams = synthetic(n, partitions, error_share, rate=rate, sources=args.sources)
    correlator = Correlator(rules)
    emitted = late = changes = 0
    since_checkpoint = 0
    gc.collect()
    start = time.perf_counter()
    cpu_start = time.process_time()
    offsets = [0] * partitions
    remaining = True
    while remaining:
        remaining = False
        for p, (events, times) in enumerate(streams):
            lo = offsets[p]
            if lo >= len(events):
                continue
            remaining = True
            hi = lo + batch
            result = correlator.process(p, events[lo:hi], times[lo:hi], 0)
            offsets[p] = hi
            emitted += len(result.correlations)
            late += len(result.late_indices)
            since_checkpoint += min(hi, len(events)) - lo
            if since_checkpoint >= checkpoint_every:
                since_checkpoint = 0
                for q in range(partitions):
                    changes += len(correlator.drain_changes(q))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(
        f"rules={len(rules)} events={n} batch={batch} partitions={partitions} "
        f"error_share={error_share:g} rate={rate}/s sources={args.sources}: "
        f"{n / elapsed:,.0f} events/s, {elapsed / n * 1e6:.3f} us/event wall, "
        f"{cpu / n * 1e6:.3f} us/event CPU "
        f"(correlations={emitted} late={late} changelog entries={changes} "
        f"state={correlator.stats()})"
    )


def positive(text: str) -> int:
    """argparse type: an integer above zero (``--rate 0`` would divide by zero)."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time Correlator.process on synthetic events.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=positive, default=1_000_000, help="events in total")
    parser.add_argument("--batch", type=positive, default=10_000, help="events per process() call")
    parser.add_argument("--partitions", type=positive, default=4)
    parser.add_argument(
        "--checkpoint-every", type=positive, default=100_000, help="events per drain"
    )
    parser.add_argument("--rules", choices=["default", *PRESETS], default="default")
    parser.add_argument(
        "--sources", type=positive, default=200, help="distinct sources (group keys)"
    )
    parser.add_argument(
        "--rate", type=positive, default=1000, help="events per second of event time (all sources)"
    )
    parser.add_argument(
        "--error-share", type=float, default=0.15, help="fraction of error/critical events"
    )
    args = parser.parse_args(argv)
    rules = DEFAULT_RULES if args.rules == "default" else parse_rules(PRESETS[args.rules])
    for n in sorted({min(100_000, args.events), args.events}):
        run(rules, n, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
