"""``stream topics create``: create the pipeline's topics (idempotent)."""

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
        "topics",
        help="create the pipeline's topics",
        description=(
            "Create the input, output, DLQ, late-event (<input>.late by default), reference "
            "(compacted) and window-state changelog (compacted) topics. Existing topics are "
            "left alone. The changelog gets the input's "
            "partition count, which is what the window state needs."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create missing topics")
    add_config_args(create)
    create.add_argument(
        "--partitions", type=int, default=8, help="partitions per topic (default 8)"
    )
    create.add_argument(
        "--reference-partitions",
        type=int,
        default=1,
        help="partitions of the reference topic (default 1)",
    )
    create.set_defaults(func=run_create)


@friendly_errors
def run_create(args: argparse.Namespace) -> int:
    from stream.errors import ConfigError
    from stream.kafka.admin import TopicSpec, check_cluster, create_topics, partition_count

    if args.partitions < 1:
        raise ConfigError("--partitions", "must be at least 1")
    quiet_librdkafka()
    settings = settings_from_args(args)
    conf = settings.kafka_client_config()
    metadata = check_cluster(conf)
    existing_input = partition_count(metadata, settings.topics.input)
    partitions = existing_input or args.partitions
    compact = {"cleanup.policy": "compact"}
    t = settings.topics
    specs = [
        TopicSpec(t.input, partitions),
        TopicSpec(t.enriched, partitions),
        TopicSpec(t.correlations, partitions),
        TopicSpec(t.dlq, partitions),
        TopicSpec(settings.late_topic, partitions),
        TopicSpec(t.reference, args.reference_partitions, compact),
        TopicSpec(settings.changelog_topic, partitions, compact),
    ]
    created = create_topics(conf, specs)
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        print(f"{state:8} {spec.name} ({spec.partitions} partitions)")
    changelog = partition_count(check_cluster(conf), settings.changelog_topic)
    if changelog is not None and changelog != partitions:
        raise ConfigError(
            "topics.changelog",
            f"{settings.changelog_topic} has {changelog} partitions but {t.input} has "
            f"{partitions}; "
            "they must match",
        )
    return 0
