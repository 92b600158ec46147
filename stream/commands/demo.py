"""``stream demo``: local broker, topics, reference data, workers and load, live summary."""

from __future__ import annotations

import argparse

from stream.commands.common import friendly_errors


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo",
        help="run the whole pipeline locally with a live summary",
        description=(
            "Start a local Apache Kafka broker (unless STREAM_BOOTSTRAP_SERVERS is set), "
            "create the "
            "topics, seed reference data, start worker(s) and the load generator, and print a live "
            "summary (events in/out per stage, DLQ, correlations, events/s, lag) until Ctrl-C or "
            "--duration. Workers get SIGTERM at the end and commit cleanly; the broker keeps "
            "running (stop it with `stream broker stop`)."
        ),
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="seconds to run; 0 = until Ctrl-C (default)"
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=20_000,
        help="events/s offered by the load generator (default 20000)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes in the group (default 1)"
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions of new topics (default 4)"
    )
    parser.add_argument(
        "--invalid-ratio", type=float, default=0.02, help="share of invalid events (default 0.02)"
    )
    parser.add_argument("--port", type=int, default=9092, help="local broker port (default 9092)")
    parser.add_argument(
        "--web-port", type=int, default=6066, help="first worker's metrics port (default 6066)"
    )
    parser.set_defaults(func=run_demo)


@friendly_errors
def run_demo(args: argparse.Namespace) -> int:
    from stream.demo import Demo, DemoOptions

    options = DemoOptions(
        duration=args.duration,
        rate=args.rate,
        workers=args.workers,
        partitions=args.partitions,
        invalid_ratio=args.invalid_ratio,
        port=args.port,
        web_port=args.web_port,
    )
    return Demo(options).run()
