"""``stream worker``: run one worker of the consumer group (a Faust application)."""

from __future__ import annotations

import argparse

from stream.commands.common import (
    add_config_args,
    friendly_errors,
    quiet_librdkafka,
    settings_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "worker",
        help="run a worker (consumer group member) of the pipeline",
        description=(
            "Consume the input topic as a member of the consumer group, run every event through "
            "validate -> enrich -> correlate, write events.enriched / events.correlations / "
            "events.dlq, "
            "and commit offsets only after outputs and window state are durable. Serves /metrics, "
            "/health and /ready on --web-port. SIGTERM: stop fetching, finish the batch, flush, "
            "commit, leave the group. Run as many workers as the input topic has partitions."
        ),
    )
    add_config_args(parser)
    parser.add_argument("--group-id", help="consumer group (default: stream-workers)")
    parser.add_argument(
        "--web-port", type=int, help="port for /metrics /health /ready (default 6066)"
    )
    parser.add_argument(
        "--guarantee",
        choices=["at_least_once", "exactly_once"],
        help="processing guarantee (default at_least_once; exactly_once uses Kafka transactions)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.set_defaults(func=run_worker)


@friendly_errors
def run_worker(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from stream.errors import FatalError
    from stream.kafka.admin import check_cluster, partition_count
    from stream.observability.logging import configure_logging

    overrides = {}
    if args.group_id:
        overrides["group_id"] = args.group_id
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    if args.guarantee:
        overrides["processing_guarantee"] = args.guarantee
    settings = settings_from_args(args, **overrides)
    configure_logging(settings.log_format, settings.log_level)
    quiet_librdkafka()
    metadata = check_cluster(settings.kafka_client_config())
    t = settings.topics
    missing = [
        name
        for name in (
            t.input,
            t.enriched,
            t.correlations,
            t.dlq,
            t.reference,
            settings.changelog_topic,
        )
        if partition_count(metadata, name) is None
    ]
    if missing:
        raise FatalError(
            f"missing topics: {', '.join(missing)}; create them with `stream topics create`"
        )

    if not args.no_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())

    import faust

    from stream.app import create_app

    os.environ.setdefault("STREAM_HOME", ".stream")
    app, _service = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
