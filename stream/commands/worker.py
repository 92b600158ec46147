"""``stream worker``: run one worker of the consumer group (a Faust application)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from stream.commands.common import (
    add_config_args,
    friendly_errors,
    quiet_librdkafka,
    settings_from_args,
)

if TYPE_CHECKING:
    from stream.config import Settings

log = logging.getLogger(__name__)


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
    from stream.pipeline import check_pipeline

    check_pipeline(settings)  # a bad pipeline file fails before anything touches Kafka
    preflight(settings)

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


def preflight(settings: Settings) -> None:
    """Fail fast, in one line, on what would otherwise fail later and murkier.

    Wrong credentials show up in librdkafka's error callback while the metadata
    request merely times out; a topic the principal may not DESCRIBE is simply
    absent from the metadata. Both are told apart here from a network problem
    and from a topic that does not exist.
    """
    import time

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from stream.errors import BrokerUnavailableError, FatalError
    from stream.kafka.admin import partition_count
    from stream.kafka.client import client_config

    auth_codes = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
    who = f"user {settings.sasl_username!r}" if settings.sasl_username else "this client"
    errors: list[KafkaError] = []
    conf = settings.kafka_client_config()
    admin = AdminClient(client_config(conf, error_cb=errors.append))
    deadline = time.monotonic() + 10.0
    while True:
        try:
            metadata = admin.list_topics(timeout=1.0)
            break
        except KafkaException:
            admin.poll(0)  # authentication failures arrive only through error_cb
        auth = next((e for e in errors if e.code() in auth_codes), None)
        if auth is not None:
            raise FatalError(
                f"authentication to {settings.bootstrap_servers} as {who} failed: {auth.str()}"
            )
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(
                f"cannot reach Kafka at {settings.bootstrap_servers} within 10s. "
                "Start one with `stream broker start`, or set STREAM_BOOTSTRAP_SERVERS."
            )
    t = settings.topics
    required = (t.input, t.enriched, t.correlations, t.dlq, t.reference, settings.changelog_topic)
    absent = [name for name in required if partition_count(metadata, name) is None]
    late = settings.late_topic
    if settings.correlate.late_policy == "topic" and partition_count(metadata, late) is None:
        # Not required: nothing goes there until an event is late (a broker that creates
        # topics on first use makes it with its default partition count).
        log.warning("late-event topic %s does not exist; `stream topics create` makes it", late)
    if not absent:
        return
    denied = []
    for name in absent:
        topic = admin.list_topics(topic=name, timeout=10).topics.get(name)
        error = None if topic is None else topic.error
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            denied.append(name)
    if denied:
        raise FatalError(
            f"{who} is not authorized to use topics {', '.join(denied)}: grant it DESCRIBE "
            "and READ (input, reference, changelog) / WRITE (outputs, changelog) ACLs"
        )
    raise FatalError(
        f"missing topics: {', '.join(absent)}; create them with `stream topics create`"
    )
