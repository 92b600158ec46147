"""``stream plan``: size a deployment (partitions, replicas, KEDA lag threshold).

The arithmetic lives in :mod:`stream.planning`; this module only gathers the
inputs (flags, the newest benchmark result) and prints the outcome, so the same
numbers can be checked by tests against the committed Kubernetes overlays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stream.planning import (
    DEFAULT_BURST_FACTOR,
    DEFAULT_HEADROOM,
    DEFAULT_MAX_LAG_SECONDS,
    DEFAULT_MIN_REPLICAS_FLOOR,
    DEFAULT_PER_WORKER_RATE,
    SCALE_DOWN_STABILIZATION_S,
    Plan,
    PlanInputs,
    PlanningError,
    make_plan,
    per_worker_rate_from_results,
    scale_down_tolerance,
    scaled_object,
)

DEFAULT_RESULTS_DIR = "benchmarks/results"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="recommend partitions, replicas and KEDA settings for a target rate",
        description=(
            "Recommend the input topic's partition count, min/max worker replicas and the "
            "KEDA Kafka trigger's lagThreshold for a target event rate, from the measured "
            "per-worker throughput. Without --per-worker-rate the newest "
            f"{DEFAULT_RESULTS_DIR}/*.json row for 'stream' (events_per_s) is used, else "
            f"{DEFAULT_PER_WORKER_RATE:,.0f} events/s."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--target-rate", type=float, required=True, help="events/s the pipeline must sustain"
    )
    parser.add_argument(
        "--per-worker-rate",
        type=float,
        default=None,
        help="measured events/s of one worker (default: newest benchmark result)",
    )
    parser.add_argument(
        "--headroom",
        type=float,
        default=DEFAULT_HEADROOM,
        help="fraction of each worker's capacity kept spare",
    )
    parser.add_argument(
        "--burst-factor",
        type=float,
        default=DEFAULT_BURST_FACTOR,
        help="max replicas carry this multiple of the target rate (backlog catch-up)",
    )
    parser.add_argument(
        "--max-lag-seconds",
        type=float,
        default=DEFAULT_MAX_LAG_SECONDS,
        help="lag per replica, in seconds of work, that should trigger a scale-up",
    )
    parser.add_argument(
        "--min-replicas",
        type=int,
        default=DEFAULT_MIN_REPLICAS_FLOOR,
        help="availability floor for minReplicaCount",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partition count of an existing input topic (default: recommend one)",
    )
    parser.add_argument(
        "--results-dir",
        default=DEFAULT_RESULTS_DIR,
        help="where benchmark result JSON files are read from",
    )
    parser.add_argument(
        "--print-scaledobject",
        action="store_true",
        help="also print a KEDA ScaledObject manifest carrying these values",
    )
    parser.add_argument("--name", default="stream-worker", help="ScaledObject name")
    parser.add_argument("--deployment", default="stream-worker", help="Deployment to scale")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("STREAM_BOOTSTRAP_SERVERS", "kafka:9092"),
        help="bootstrap servers KEDA uses to read lag (default: $STREAM_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--group",
        default=os.environ.get("STREAM_GROUP_ID", "stream-workers"),
        help="the workers' consumer group",
    )
    parser.add_argument("--topic", default="events", help="input topic")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rate, source = _per_worker_rate(args.per_worker_rate, Path(args.results_dir))
    try:
        plan = make_plan(
            PlanInputs(
                target_rate=args.target_rate,
                per_worker_rate=rate,
                headroom=args.headroom,
                burst_factor=args.burst_factor,
                max_lag_seconds=args.max_lag_seconds,
                min_replicas_floor=args.min_replicas,
                partitions=args.partitions,
            )
        )
    except PlanningError as exc:
        print(f"stream plan: error: {exc}", file=sys.stderr)
        return 2
    print(render(plan, source))
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.print_scaledobject:
        import yaml

        manifest = scaled_object(
            plan,
            name=args.name,
            deployment=args.deployment,
            bootstrap_servers=args.bootstrap_servers,
            consumer_group=args.group,
            topic=args.topic,
        )
        print("---")
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
    return 0


def render(plan: Plan, rate_source: str) -> str:
    """The human-readable plan (stdout)."""
    inputs = plan.inputs
    lines = [
        f"target rate            {inputs.target_rate:>12,.0f} events/s",
        f"per-worker rate        {inputs.per_worker_rate:>12,.0f} events/s  ({rate_source})",
        f"usable per worker      {plan.usable_rate_per_worker:>12,.0f} events/s  "
        f"(headroom {inputs.headroom:.0%})",
        f"replicas needed        {plan.replicas_needed:>12}",
        f"partitions             {plan.partitions:>12}",
        f"minReplicaCount        {plan.min_replicas:>12}",
        f"maxReplicaCount        {plan.max_replicas:>12}  "
        f"(carries {plan.max_sustainable_rate:,.0f} events/s)",
        f"lag budget per replica {plan.lag_budget_per_replica:>12,}  "
        f"({inputs.max_lag_seconds:g} s of work)",
        f"lagThreshold           {plan.lag_threshold:>12}  (scale up above 80% of the budget)",
        f"scale-down lag         {plan.scale_down_lag:>12}  (20% of the budget; HPA "
        f"scaleDown.tolerance {scale_down_tolerance()} on Kubernetes >= 1.33, otherwise "
        f"{SCALE_DOWN_STABILIZATION_S} s stabilization)",
    ]
    return "\n".join(lines)


def _per_worker_rate(explicit: float | None, results_dir: Path) -> tuple[float, str]:
    if explicit is not None:
        return explicit, "--per-worker-rate"
    try:
        files = sorted(results_dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        files = []
    for path in files:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rate = per_worker_rate_from_results(document)
        if rate is not None:
            return rate, f"measured, {path}"
    return DEFAULT_PER_WORKER_RATE, "default; no benchmark result found"
