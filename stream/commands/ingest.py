"""``stream ingest``: files or HTTP POSTs -> validated events on the input topic.

Argument parsing, pre-flight checks and printing only; the work is in
:mod:`connectors.file_ingest` and :mod:`connectors.http_ingest`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from stream.commands.common import (
    add_config_args,
    friendly_errors,
    quiet_librdkafka,
    settings_from_args,
)

#: Kept in step with ``connectors.keys.KEY_FUNCTIONS`` (a unit test checks); importing that
#: module here would load msgspec models on every ``stream --help``.
KEY_CHOICES = ("source", "entity", "event_id", "none")
FORMAT_CHOICES = ("csv", "tsv", "ndjson", "jsonl", "json", "parquet")
TOKEN_ENV = "STREAM_INGEST_TOKEN"
EXIT_INTERRUPTED = 130

_DESCRIPTION = """\
Load events into the input topic, validated exactly as the worker validates them.

Files:  stream ingest data.csv more.ndjson --topic events
  Formats: CSV/TSV (header row), NDJSON, JSON arrays, Parquet (by extension, or --format).
  --map renames columns to event fields, e.g. --map event_id=id,source=service,attributes.dc=dc
  Invalid rows go to the DLQ topic with dlq.source.file / dlq.source.line headers.
  Progress is saved in $STREAM_HOME/ingest-state after the broker acknowledged the rows;
  running the same command again resumes where it stopped (Ctrl-C is safe) and skips
  files already done. --restart ingests from the beginning again.

HTTP:   stream ingest --http --port 8080 [--token T]
  POST /events with one JSON event (Content-Type: application/json) or NDJSON lines.
  202 {"accepted", "rejected", "errors": [{"line", "error_class", "message"}]} once the
  broker acknowledged the accepted events; 413 body too large; 429 + Retry-After when the
  producer queue is full; 401 without the bearer token (--token or $STREAM_INGEST_TOKEN).
  GET /health, GET /metrics. SIGTERM: finish requests in flight, flush, exit.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "ingest",
        help="load CSV/NDJSON/JSON/Parquet files or HTTP POSTs into the input topic",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(parser)
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to ingest, in order")
    parser.add_argument("--topic", help="target topic (default: topics.input, i.e. events)")
    parser.add_argument("--dlq-topic", help="dead-letter topic (default: topics.dlq)")
    parser.add_argument(
        "--key",
        choices=KEY_CHOICES,
        default="source",
        help="record key, which decides the partition (default: %(default)s)",
    )
    files = parser.add_argument_group("files")
    files.add_argument("--format", choices=FORMAT_CHOICES, help="default: from the extension")
    files.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN[,...]",
        help="column for an event field; unmapped fields use the column of the same name",
    )
    files.add_argument("--delimiter", help="CSV delimiter (default: ',' or tab for .tsv)")
    files.add_argument(
        "--restart", action="store_true", help="ignore saved progress and start every file over"
    )
    files.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where progress is saved (default: $STREAM_HOME/ingest-state)",
    )
    files.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="flush and save progress this often (default: %(default)s)",
    )
    files.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    files.add_argument("--json", action="store_true", help="print the final report as JSON")
    http = parser.add_argument_group("HTTP")
    http.add_argument("--http", action="store_true", help="serve POST /events instead")
    http.add_argument("--host", default="0.0.0.0", help="listen address (default: %(default)s)")
    http.add_argument("--port", type=int, default=8080, help="listen port (default: %(default)s)")
    http.add_argument("--token", help=f"required bearer token (default: ${TOKEN_ENV}; none: open)")
    http.add_argument(
        "--max-body-bytes",
        type=int,
        default=10 * 1024 * 1024,
        help="larger requests get 413 (default: %(default)s)",
    )
    http.add_argument(
        "--max-pending",
        type=int,
        default=200_000,
        help="events awaiting broker acknowledgement before 429 (default: %(default)s)",
    )
    parser.set_defaults(func=run_ingest)


@friendly_errors
def run_ingest(args: argparse.Namespace) -> int:
    from stream.errors import ConfigError

    if args.http and args.files:
        raise ConfigError("FILE", "give files or --http, not both")
    if not args.http and not args.files:
        raise ConfigError("FILE", "name at least one file to ingest (or use --http)")
    settings = settings_from_args(args)
    quiet_librdkafka()
    topic = args.topic or settings.topics.input
    dlq_topic = args.dlq_topic or settings.topics.dlq
    conf = settings.kafka_client_config()
    if args.http:
        _require_topics(conf, [topic])
        return _serve_http(args, settings, topic)
    sources = _open_sources(args)  # bad files and mappings fail before Kafka is contacted
    _require_topics(conf, [topic, dlq_topic])
    return _ingest_files(args, settings, sources, topic, dlq_topic)


def _require_topics(conf: dict[str, str], topics: list[str]) -> None:
    from stream.errors import FatalError
    from stream.kafka.admin import check_cluster, partition_count

    metadata = check_cluster(conf)
    missing = [t for t in topics if partition_count(metadata, t) is None]
    if missing:
        raise FatalError(
            f"topic {missing[0]} does not exist; create it with `stream topics create` "
            "(or kafka-topics.sh)"
        )


def _validator(settings: Any) -> Any:
    from stream.pipeline import build_validator

    return build_validator(settings)


def _open_sources(args: argparse.Namespace) -> list[Any]:
    from connectors.mapping import ColumnMapping
    from connectors.registry import open_source
    from stream.errors import ConfigError

    if args.checkpoint_interval <= 0:
        raise ConfigError("--checkpoint-interval", "must be > 0")
    mapping = ColumnMapping.parse(args.map)
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise ConfigError("FILE", f"no such file: {path}")
    return [open_source(p, mapping, args.format, delimiter=args.delimiter) for p in paths]


def _ingest_files(
    args: argparse.Namespace, settings: Any, sources: list[Any], topic: str, dlq_topic: str
) -> int:
    from connectors.file_ingest import FileIngest, IngestOptions
    from connectors.ingest_state import StateStore, default_state_dir
    from connectors.progress import ProgressLine
    from stream.kafka.producer import OutputProducer

    store = StateStore(Path(args.state_dir) if args.state_dir else default_state_dir())
    options = IngestOptions(
        topic=topic,
        dlq_topic=dlq_topic,
        bootstrap=settings.bootstrap_servers,
        key=args.key,
        checkpoint_interval=args.checkpoint_interval,
        restart=args.restart,
    )
    progress = ProgressLine(sys.stderr, enabled=not args.quiet)
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        producer = OutputProducer(settings.kafka_client_config())
        ingest = FileIngest(
            producer, _validator(settings), store, options, progress=progress, stop=stop
        )
        report = ingest.run(sources)
    finally:
        restore()
    _print_report(report, topic, dlq_topic, as_json=args.json)
    return EXIT_INTERRUPTED if report.interrupted else 0


def _stop_on_signals(stop: threading.Event) -> Any:
    """SIGINT/SIGTERM set ``stop`` (checkpoint, then exit); a second signal exits at once."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        stop.set()
        for sig, old in previous.items():
            signal.signal(sig, old)
        print("\nstopping: flushing and saving progress (again to abort)", file=sys.stderr)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _print_report(report: Any, topic: str, dlq_topic: str, *, as_json: bool) -> None:
    if as_json:
        body = {
            "topic": topic,
            "dlq_topic": dlq_topic,
            "rows": report.rows,
            "accepted": report.accepted,
            "rejected": report.rejected,
            "seconds": round(report.seconds, 3),
            "rows_per_second": round(report.rows_per_second),
            "interrupted": report.interrupted,
            "files": [
                {
                    "path": f.path,
                    "accepted": f.accepted,
                    "rejected": f.rejected,
                    "resumed_from": f.resumed_from,
                    "already_done": f.already_done,
                    "finished": f.finished,
                }
                for f in report.files
            ],
        }
        print(json.dumps(body))
        return
    verb = "interrupted after" if report.interrupted else "ingested"
    print(
        f"{verb} {report.rows:,} rows from {len(report.files)} file(s) into {topic} in "
        f"{report.seconds:,.1f}s ({report.rows_per_second:,.0f} rows/s): "
        f"{report.accepted:,} accepted, {report.rejected:,} rejected -> {dlq_topic}"
    )
    for f in report.files:
        if f.already_done:
            note = "already ingested by an earlier run; skipped (--restart to redo)"
        else:
            note = f"{f.accepted:,} accepted, {f.rejected:,} rejected"
            if f.resumed_from:
                note += f" (resumed after row {f.resumed_from:,})"
            if not f.finished:
                note += "; not finished: run the same command again to resume"
        print(f"  {os.path.basename(f.path)}: {note}")


def _serve_http(args: argparse.Namespace, settings: Any, topic: str) -> int:
    from connectors.http_ingest import HttpIngestOptions, serve

    token = args.token or os.environ.get(TOKEN_ENV) or None
    options = HttpIngestOptions(
        topic=topic,
        host=args.host,
        port=args.port,
        token=token,
        max_body_bytes=args.max_body_bytes,
        max_pending=args.max_pending,
        key=args.key,
    )
    return serve(settings.kafka_client_config(), _validator(settings), options)
