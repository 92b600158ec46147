"""``stream sink postgres|file``: a topic -> PostgreSQL or rolling files, as its own consumer group.

Argument parsing and printing only. Sinks are built through
:data:`connectors.registry.SINKS`; the loop and the checkpoint rule are in
:mod:`connectors.sink_runner`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from stream.commands.common import (
    add_config_args,
    friendly_errors,
    quiet_librdkafka,
    settings_from_args,
)

DSN_ENV = "STREAM_SINK_DSN"
_FORMAT = argparse.RawDescriptionHelpFormatter

_DESCRIPTION = """\
Copy a topic into another system as a consumer group of its own.

  stream sink postgres --topic events.enriched --dsn postgresql://u@db/app --table events
  stream sink file --topic events.enriched --dir /data/events --format parquet

Offsets are committed only after the data is durable on the other side (a database
commit, an fsynced and renamed file), so a crash or SIGKILL replays and never loses;
the sinks absorb the replay (PostgreSQL by event_id, files by name), so nothing is
written twice. SIGTERM: write what was read, commit, leave the group, exit.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "sink",
        help="copy a topic into PostgreSQL or rolling NDJSON/Parquet files",
        description=_DESCRIPTION,
        formatter_class=_FORMAT,
    )
    parser.set_defaults(func=lambda _args: _help(parser))
    kinds = parser.add_subparsers(dest="sink", metavar="SINK")
    _register_postgres(kinds)
    _register_file(kinds)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_common(parser: argparse.ArgumentParser, default_group: str) -> None:
    add_config_args(parser)
    parser.add_argument(
        "--topic", help="topic to read (default: topics.enriched, i.e. events.enriched)"
    )
    parser.add_argument(
        "--group", help=f"consumer group (default: {default_group}-<topic>)", metavar="GROUP"
    )
    parser.add_argument("--dlq-topic", help="where refused records go (default: topics.dlq)")
    parser.add_argument(
        "--stop-at-end",
        action="store_true",
        help="exit once the topic is read to its current end (default: run until SIGTERM)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def _register_postgres(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = kinds.add_parser(
        "postgres",
        aliases=["postgresql"],
        help="write enriched events into a PostgreSQL table (idempotent by event_id)",
        description=(
            "Write events.enriched records into a table, one row per event_id. Each checkpoint\n"
            "is one transaction: COPY into a temporary table, then INSERT ... ON CONFLICT\n"
            "(event_id) DO NOTHING; Kafka offsets are committed after the database COMMIT.\n"
            "The table is created when missing (schema: see connectors/postgres_sink.py).\n"
            "While PostgreSQL is down the sink pauses (circuit breaker + retry) and resumes\n"
            "on its own; records that are not enriched events go to the DLQ."
        ),
        formatter_class=_FORMAT,
    )
    _add_common(parser, "stream-sink-postgres")
    parser.add_argument(
        "--dsn",
        help=f"libpq connection string or URL (default: ${DSN_ENV}, else enrich.postgres_dsn)",
    )
    parser.add_argument(
        "--table", default="events_enriched", help="target table (default: %(default)s)"
    )
    parser.add_argument(
        "--no-create-table", action="store_true", help="fail instead of creating a missing table"
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between checkpoints (default: %(default)s)",
    )
    parser.add_argument(
        "--commit-every",
        type=int,
        default=100_000,
        metavar="RECORDS",
        help="checkpoint after this many records at the latest (default: %(default)s)",
    )
    parser.set_defaults(func=run_postgres)


def _register_file(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = kinds.add_parser(
        "file",
        help="write a topic into rolling NDJSON or Parquet files",
        description=(
            "Write each partition into rolling files <topic>-<partition>-<first offset>.<format>.\n"
            "Open files are hidden (.<name>.tmp) and renamed atomically at a checkpoint, when a\n"
            "file reaches --roll-size or --roll-seconds; offsets are committed after the rename.\n"
            "A replay after a crash rewrites the same file names, so no record is duplicated."
        ),
        formatter_class=_FORMAT,
    )
    _add_common(parser, "stream-sink-file")
    parser.add_argument("--dir", required=True, help="output directory (created if missing)")
    parser.add_argument(
        "--format", choices=("ndjson", "parquet"), default="ndjson", help="default: %(default)s"
    )
    parser.add_argument(
        "--roll-size",
        type=_size,
        default="64MB",
        metavar="SIZE",
        help="roll files at this size, e.g. 500KB, 64MB, 1GB (default: %(default)s)",
    )
    parser.add_argument(
        "--roll-seconds",
        type=float,
        default=300.0,
        help="roll files at this age in seconds (default: %(default)s)",
    )
    parser.set_defaults(func=run_file)


def _size(text: str) -> int:
    """``500KB``, ``64MB``, ``1GB`` or a plain number of bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]?b?)\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64MB)")
    factor = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2}.get(
        match.group(2), 1024**3
    )
    value = int(float(match.group(1)) * factor)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


@friendly_errors
def run_postgres(args: argparse.Namespace) -> int:
    from connectors.registry import SINKS
    from stream.errors import ConfigError

    settings = settings_from_args(args)
    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn and settings.enrich.postgres_dsn is not None:
        dsn = settings.enrich.postgres_dsn.get_secret_value()
    if not dsn:
        raise ConfigError("--dsn", f"give a PostgreSQL DSN (--dsn or ${DSN_ENV})")
    if args.commit_interval <= 0 or args.commit_every <= 0:
        raise ConfigError("--commit-interval/--commit-every", "must be > 0")
    sink = SINKS.load("postgres")(dsn, args.table, create_table=not args.no_create_table)  # type: ignore[call-arg]
    return _run(
        args, settings, sink, "stream-sink-postgres", args.commit_interval, args.commit_every
    )


@friendly_errors
def run_file(args: argparse.Namespace) -> int:
    from connectors.registry import SINKS

    settings = settings_from_args(args)
    sink = SINKS.load("file")(  # type: ignore[call-arg]
        args.dir, fmt=args.format, roll_bytes=args.roll_size, roll_seconds=args.roll_seconds
    )
    return _run(args, settings, sink, "stream-sink-file", None, 10**12)


def _run(
    args: argparse.Namespace,
    settings: Any,
    sink: Any,
    group_prefix: str,
    interval: float | None,
    every: int,
) -> int:
    from connectors.progress import ProgressLine
    from connectors.sink_runner import SinkRunner, SinkRunnerOptions
    from stream.errors import FatalError
    from stream.kafka.admin import check_cluster, partition_count
    from stream.observability.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    quiet_librdkafka()
    topic = args.topic or settings.topics.enriched
    dlq_topic = args.dlq_topic or settings.topics.dlq
    conf = settings.kafka_client_config()
    metadata = check_cluster(conf)
    for name in (topic, dlq_topic):
        if partition_count(metadata, name) is None:
            raise FatalError(f"topic {name} does not exist; create it with `stream topics create`")
    options = SinkRunnerOptions(
        topic=topic,
        group_id=args.group or f"{group_prefix}-{topic}",
        dlq_topic=dlq_topic,
        checkpoint_interval=interval,
        checkpoint_every=every,
        max_batch=settings.max_batch,
        stop_at_end=args.stop_at_end,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner = SinkRunner(
        conf, sink, options, stop=stop, progress=ProgressLine(sys.stderr, enabled=not args.quiet)
    )
    stats = runner.run()
    print(
        f"sink {sink.name}: {stats.consumed:,} records from {topic} in {stats.seconds:,.1f}s "
        f"({stats.records_per_second:,.0f} records/s); {sink.summary()}; "
        f"{stats.rejected:,} refused -> {dlq_topic}; {stats.checkpoints:,} checkpoints",
        flush=True,
    )
    return 0
