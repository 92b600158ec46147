"""``stream dlq inspect|replay``: see what is failing, then send it back once fixed.

Argument parsing and printing only; the Kafka work is in :mod:`stream.dlq_tools`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from stream.commands.common import (
    EXIT_RUNTIME,
    add_config_args,
    friendly_errors,
    quiet_librdkafka,
    settings_from_args,
)

_FORMAT = argparse.RawDescriptionHelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "dlq",
        help="inspect the dead-letter topic and replay records from it",
        description=(
            "Dead-letter topic tools. DLQ records keep the original key, value, timestamp and\n"
            "headers and add dlq.* headers (original topic/partition/offset, error class and\n"
            "message, stage, attempts, failed_at).\n\n"
            "  stream dlq inspect                   what is failing, with samples\n"
            "  stream dlq replay --to events ...    send fixed records back"
        ),
        formatter_class=_FORMAT,
    )
    parser.set_defaults(func=lambda _args: _print_help(parser))
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION")
    _register_inspect(actions)
    _register_replay(actions)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument(
        "--topic",
        metavar="TOPIC",
        help="the dead-letter topic (default: topics.dlq of --config, else events.dlq)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the broker before giving up (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _register_inspect(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = actions.add_parser(
        "inspect",
        help="count DLQ records by error class, stage and original topic; show samples",
        description=(
            "Read the dead-letter topic from the beginning to its current end and print counts\n"
            "by error class, by stage and by original topic, plus a few sample records per\n"
            "error class. Reading uses no consumer group and commits nothing."
        ),
        formatter_class=_FORMAT,
    )
    _add_common(parser)
    parser.add_argument(
        "--limit",
        type=_positive(int),
        metavar="N",
        help="stop after N records (default: read everything)",
    )
    parser.add_argument(
        "--samples",
        type=_non_negative_int,
        default=3,
        metavar="K",
        help="sample records shown per error class (default: %(default)s)",
    )
    parser.add_argument(
        "--max-value-chars",
        type=_positive(int),
        default=200,
        metavar="N",
        help="sample keys and values are cut to N characters (default: %(default)s)",
    )
    parser.set_defaults(func=run_inspect)


def _register_replay(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from stream.dlq_tools import DEFAULT_REPLAY_GROUP

    parser = actions.add_parser(
        "replay",
        help="re-send matching DLQ records to a topic (once)",
        description=(
            "Re-produce DLQ records to --to with their original key, value, timestamp and\n"
            "headers (dlq.* headers removed) plus a dlq.replayed header. Records that already\n"
            "carry dlq.replayed (they were replayed and failed again) are skipped unless\n"
            "--allow-replayed. Records whose event was already delivered to the enriched topic\n"
            "(error class late, or any record dead-lettered at the correlate stage) are refused\n"
            "unless --force: replaying them would deliver the event twice. Progress is committed\n"
            "to the consumer group --group after the broker acknowledged each batch, so running\n"
            "the same replay again does not re-send.\n"
            "The group remembers how far it read, not what matched: use another --group for a\n"
            "replay with different filters.\n\n"
            "Filters: --filter KEY=VALUE with KEY one of error_class, stage, original_topic\n"
            "(repeat a key for OR, combine keys for AND); --since/--until compare with the\n"
            "record's dlq.failed_at (ISO 8601; no offset means UTC).\n\n"
            "example:\n"
            "  stream dlq replay --to events --filter stage=enrich \\\n"
            "      --since 2025-01-01T10:00:00Z --rate 500 --dry-run"
        ),
        formatter_class=_FORMAT,
    )
    _add_common(parser)
    parser.add_argument(
        "--to", required=True, metavar="TOPIC", help="topic to send the records to (required)"
    )
    parser.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        type=_filter,
        metavar="KEY=VALUE",
        help="only records whose dlq header matches (error_class, stage, original_topic)",
    )
    parser.add_argument(
        "--since", type=_time, metavar="TIME", help="only records that failed at or after TIME"
    )
    parser.add_argument(
        "--until", type=_time, metavar="TIME", help="only records that failed before TIME"
    )
    parser.add_argument(
        "--rate",
        type=_positive(float),
        metavar="R",
        help="at most R records per second (default: as fast as the broker takes them)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would be replayed; produce and commit nothing",
    )
    parser.add_argument(
        "--allow-replayed",
        action="store_true",
        help="also replay records that were replayed before (dlq.replayed header)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="also replay records whose event was already delivered (error class late, "
        "stage correlate): the event is delivered twice",
    )
    parser.add_argument(
        "--group",
        default=DEFAULT_REPLAY_GROUP,
        metavar="G",
        help="consumer group that stores replay progress (default: %(default)s)",
    )
    parser.set_defaults(func=run_replay)


# -- argument types -------------------------------------------------------------------------


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return convert


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _filter(text: str) -> tuple[str, str]:
    from stream.dlq_tools import parse_filter

    try:
        return parse_filter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str) -> datetime:
    from stream.dlq_tools import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- commands -------------------------------------------------------------------------------


@friendly_errors
def run_inspect(args: argparse.Namespace) -> int:
    from stream.dlq_tools import inspect_dlq

    quiet_librdkafka()
    settings = settings_from_args(args)
    summary = inspect_dlq(
        settings.kafka_client_config(),
        args.topic or settings.topics.dlq,
        limit=args.limit,
        samples=args.samples,
        max_value_chars=args.max_value_chars,
        timeout=args.timeout,
    )
    print(json.dumps(summary.to_json(), indent=2) if args.json else summary.render())
    return 0


@friendly_errors
def run_replay(args: argparse.Namespace) -> int:
    from stream.dlq_tools import ReplayFilter, replay_dlq

    quiet_librdkafka()
    settings = settings_from_args(args)
    try:
        record_filter = ReplayFilter.build(args.filters, since=args.since, until=args.until)
    except ValueError as exc:
        from stream.errors import ConfigError

        raise ConfigError("--since/--until", str(exc)) from None
    report = replay_dlq(
        settings.kafka_client_config(),
        target=args.to,
        topic=args.topic or settings.topics.dlq,
        record_filter=record_filter,
        group=args.group,
        rate=args.rate,
        dry_run=args.dry_run,
        allow_replayed=args.allow_replayed,
        force=args.force,
        timeout=args.timeout,
    )
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    if report.refused_delivered and args.json:
        import sys

        print(
            f"refused {report.refused_delivered} record(s) whose event was already delivered; "
            "--force replays them anyway",
            file=sys.stderr,
        )
    return EXIT_RUNTIME if report.failed else 0
