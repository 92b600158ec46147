"""``stream loadgen``: produce synthetic events to size and verify a deployment.

Registration is cheap (argparse only); Kafka and the generator are imported when
the command runs, so ``stream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_COUNT = 100_000
#: Event-time rate used when sending as fast as possible (event time then lags wall time).
UNTHROTTLED_EVENT_RATE = 100_000

DESCRIPTION = """\
Produce synthetic events (the input contract) to a Kafka topic.

Sources svc-0..svc-N and entities are Zipf-distributed; severities are mostly
info with occasional error bursts from one source, so correlation rules fire.
Output is deterministic per --seed (and --start-time), also with --processes.
A progress line goes to stderr; the final report to stdout (--json for JSON).
Exit status: 0 when every record was acknowledged, 1 otherwise.

examples:
  stream loadgen --count 1000000 --processes 2          # as fast as possible
  stream loadgen --duration 60 --rate 5000 --burst      # 5k/s with 3x spikes
  stream loadgen --count 100000 --invalid-ratio 0.02 --late-ratio 0.01 --seed-reference
  stream loadgen --count 100000 --format avro --registry-url http://127.0.0.1:8081/apis/ccompat/v7
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "loadgen",
        help="produce synthetic events at a controlled rate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default_bootstrap = os.environ.get("STREAM_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)
    kafka = parser.add_argument_group("kafka")
    kafka.add_argument(
        "--bootstrap-servers",
        default=default_bootstrap,
        help="Kafka bootstrap servers (default: $STREAM_BOOTSTRAP_SERVERS or %(default)s)",
    )
    kafka.add_argument("--topic", default="events", help="topic to write (default: %(default)s)")
    kafka.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions if the topic has to be created (default: %(default)s)",
    )
    kafka.add_argument(
        "--compression",
        default="lz4",
        choices=("none", "lz4", "zstd", "snappy", "gzip"),
        help="producer compression (default: %(default)s)",
    )
    kafka.add_argument(
        "--acks",
        default="all",
        choices=("all", "1", "0"),
        help="acks; 'all' also enables idempotence (default: %(default)s)",
    )
    kafka.add_argument(
        "--linger-ms", type=int, default=20, help="producer linger.ms (default: %(default)s)"
    )
    kafka.add_argument(
        "--format",
        default="json",
        choices=("json", "avro", "protobuf", "json_schema"),
        help="value format; avro, protobuf and json_schema register their schema under "
        "<topic>-value and frame every value for the schema registry (default: %(default)s)",
    )
    kafka.add_argument(
        "--registry-url",
        default=os.environ.get("STREAM_SCHEMA_REGISTRY_URL"),
        help="schema registry (Confluent-compatible API) for --format "
        "(default: $STREAM_SCHEMA_REGISTRY_URL)",
    )

    amount = parser.add_argument_group("how much and how fast")
    amount.add_argument(
        "--count",
        type=int,
        help=f"events to send (default: {DEFAULT_COUNT:,} unless --duration is given)",
    )
    amount.add_argument("--duration", type=float, help="seconds to send for")
    amount.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s over all processes; 0 = as fast as possible (default: %(default)s)",
    )
    amount.add_argument(
        "--burst",
        action="store_true",
        help="spike to 3x the rate for the last 2 s of every 10 s",
    )
    amount.add_argument(
        "--processes",
        type=int,
        default=1,
        help="producer processes; one sends ~300k events/s on a 2-core machine, add more "
        "when it is CPU-bound on a bigger one (default: %(default)s)",
    )

    shape = parser.add_argument_group("what the events look like")
    shape.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    shape.add_argument(
        "--start-time",
        type=int,
        help="event time of the first event, epoch ms (default: now)",
    )
    shape.add_argument(
        "--sources", type=int, default=50, help="number of services (default: %(default)s)"
    )
    shape.add_argument(
        "--entities", type=int, default=1000, help="number of entities (default: %(default)s)"
    )
    shape.add_argument(
        "--invalid-ratio",
        type=float,
        default=0.0,
        help="fraction violating the contract, spread over not_json, missing_field, "
        "wrong_type, bad_enum, bad_timestamp (default: %(default)s)",
    )
    shape.add_argument(
        "--late-ratio",
        type=float,
        default=0.0,
        help="fraction whose event time is 5 minutes in the past (default: %(default)s)",
    )
    shape.add_argument(
        "--payload-size",
        type=int,
        default=0,
        help="pad records to about this many bytes; 0 = natural, ~230 (default: %(default)s)",
    )

    reference = parser.add_argument_group("reference data")
    reference.add_argument(
        "--seed-reference",
        action="store_true",
        help="first write reference data for 90%% of the services to --reference-topic",
    )
    reference.add_argument(
        "--reference-topic",
        default="reference.services",
        help="topic for --seed-reference (default: %(default)s)",
    )
    reference.add_argument(
        "--reference-json",
        type=Path,
        metavar="FILE",
        help="also write the reference data to FILE as {service: {team, tier, owner}}",
    )

    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the final report as JSON")
    output.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.set_defaults(func=run)


def _fail(message: str, code: int = 1) -> int:
    print(f"stream loadgen: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from stream.errors import BrokerUnavailableError, ConfigError, StreamError
    from stream.loadgen.broker import check_broker, ensure_topic, seed_reference_data
    from stream.loadgen.generator import GeneratorConfig
    from stream.loadgen.producer import LoadOptions, run_load
    from stream.loadgen.rate import RateSchedule
    from stream.loadgen.reference import reference_data

    count = args.count if args.count is not None or args.duration else DEFAULT_COUNT
    try:
        schedule = RateSchedule(args.rate, args.burst)
        generator = GeneratorConfig(
            seed=args.seed,
            sources=args.sources,
            entities=args.entities,
            invalid_ratio=args.invalid_ratio,
            late_ratio=args.late_ratio,
            payload_size=args.payload_size,
            start_ms=args.start_time if args.start_time is not None else int(time.time() * 1000),
            event_rate=round(schedule.mean_rate) or UNTHROTTLED_EVENT_RATE,
        )
        options = LoadOptions(
            bootstrap=args.bootstrap_servers,
            topic=args.topic,
            count=count,
            duration=args.duration,
            rate=args.rate,
            processes=args.processes,
            burst=args.burst,
            generator=generator,
            compression=args.compression,
            acks=args.acks,
            linger_ms=args.linger_ms,
            format=args.format,
            registry_url=args.registry_url,
        )
        if args.format != "json":
            # Register the schema once here, so a registry problem is one clear line.
            from stream.loadgen.formats import Framer

            Framer(args.format, args.registry_url, args.topic)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except StreamError as exc:
        return _fail(str(exc))
    if args.partitions < 1:
        return _fail("invalid configuration: partitions: must be >= 1", 2)

    try:
        check_broker(options.bootstrap)
        if ensure_topic(options.bootstrap, options.topic, args.partitions):
            print(
                f"stream loadgen: created topic {options.topic!r} "
                f"with {args.partitions} partitions",
                file=sys.stderr,
            )
        if args.seed_reference:
            written = seed_reference_data(options.bootstrap, args.reference_topic, args.sources)
            print(
                f"stream loadgen: wrote {written} reference records to {args.reference_topic!r}",
                file=sys.stderr,
            )
    except BrokerUnavailableError as exc:
        return _fail(str(exc))
    if args.reference_json is not None:
        try:
            args.reference_json.write_text(json.dumps(reference_data(args.sources), indent=1))
        except OSError as exc:
            return _fail(f"cannot write {args.reference_json}: {exc.strerror}")

    report = run_load(options, progress_stream=None if args.no_progress else sys.stderr)
    if args.json:
        print(json.dumps({**report.as_dict(), "seed": args.seed}))
    else:
        print(report.summary())
    return 0 if report.ok else 1
