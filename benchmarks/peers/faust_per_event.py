"""The benchmark pipeline as a plain per-event Faust application (faust-streaming).

The textbook shape: agents iterate ``async for`` over their stream one event at a
time, send results with ``await topic.send(...)``, and the windowed count lives
in a Faust ``Table`` — which counts per key of the stream that feeds it and
takes event time from a ``faust.Record`` field (``relative_to_field``). So:

    agent ``pipeline`` (input topic, raw bytes), per event:
        validate -> invalid: DLQ topic
                 -> valid: enrich -> enriched topic
                           error|critical -> internal ``<group>-errors`` topic (ErrorEvent)
    agent ``correlate`` (``<group>-errors``), per event:
        table[source] += 1 in a 60 s tumbling window on ErrorEvent.event_time;
        a correlation when the window's count reaches 5

The transport is aiokafka (``kafka://``): ``confluent://`` hangs at start-up with
this Faust version (DESIGN.md §2). Tables use the in-memory store with their
changelog topic, Faust's default. The run stops once ``--expect`` input records
are processed and every error event they produced has been counted.

    python -m benchmarks.peers.faust_per_event --bootstrap B --input T --enriched T2 \
        --correlations T3 --dlq T4 --group G --expect N [--reference-json FILE]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from datetime import timedelta
from typing import Any

from benchmarks.peers.common import (
    ERROR_SEVERITIES,
    Tally,
    correlation,
    enrich,
    load_reference,
    parse_args,
    parse_event,
    reserve_stdout,
)

PEER = "faust"


def main(argv: list[str] | None = None) -> int:
    args = parse_args("faust_per_event", argv)
    out = reserve_stdout()
    import faust
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    partitions = len(admin.list_topics(args.input, 10).topics[args.input].partitions) or 1
    errors_name = f"{args.group}-errors"
    # Create the internal topic up front: Faust's agent would otherwise start
    # before it exists and ignore it.
    for future in admin.create_topics([NewTopic(errors_name, partitions, 1)]).values():
        with contextlib.suppress(KafkaException):
            future.result(30)
    reference = load_reference(args.reference_json)
    tally = Tally(PEER, args.expect)
    window_s = args.window_ms / 1000

    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="faust-peer-"),
        consumer_auto_offset_reset="earliest",
        topic_partitions=partitions,
        web_enabled=False,
    )

    class ErrorEvent(faust.Record, serializer="json"):
        event_id: str
        source: str
        event_time: float  # seconds, what Faust windows are measured in

    source_topic = app.topic(args.input, key_type=str, value_type=bytes, value_serializer="raw")
    dlq_topic = app.topic(args.dlq, key_type=str, value_type=bytes, value_serializer="raw")
    enriched_topic = app.topic(args.enriched, key_type=str, value_serializer="json")
    correlations_topic = app.topic(args.correlations, key_type=str, value_serializer="json")
    errors_topic = app.topic(
        errors_name, key_type=str, value_type=ErrorEvent, partitions=partitions
    )
    error_counts = (
        app.Table("error-counts", default=int, partitions=partitions)
        .tumbling(window_s, expires=timedelta(seconds=window_s * 10))
        .relative_to_field(ErrorEvent.event_time)  # type: ignore[arg-type]
    )

    errors_sent = 0
    errors_counted = 0
    finished = asyncio.Event()

    def check_finished() -> None:
        if tally.events >= args.expect and errors_counted >= errors_sent:
            tally.done_at()
            finished.set()

    @app.agent(source_topic)
    async def pipeline(stream: Any) -> None:
        nonlocal errors_sent
        async for key, raw in stream.items():
            tally.saw_input()
            event = parse_event(raw)
            if event is None:
                await dlq_topic.send(key=key, value=raw)
                tally.dlq += 1
            else:
                await enriched_topic.send(key=key, value=enrich(event, reference))
                tally.valid += 1
                if event["severity"] in ERROR_SEVERITIES:
                    errors_sent += 1
                    await errors_topic.send(
                        key=event["source"],
                        value=ErrorEvent(
                            event_id=event["event_id"],
                            source=event["source"],
                            event_time=event["event_time_ms"] / 1000,
                        ),
                    )
            check_finished()

    @app.agent(errors_topic)
    async def correlate(stream: Any) -> None:
        nonlocal errors_counted
        async for error in stream:
            error_counts[error.source] += 1
            # value() is relative to the table's field (event time); current() would
            # use the Kafka record timestamp, i.e. produce time
            count = error_counts[error.source].value()
            if count == args.threshold:
                start = int(error.event_time // window_s * args.window_ms)
                await correlations_topic.send(
                    key=error.source,
                    value=correlation(error.source, start, start + args.window_ms, count),
                )
                tally.correlations += 1
            errors_counted += 1
            check_finished()

    @app.task  # type: ignore[untyped-decorator]
    async def stop_when_finished() -> None:
        try:
            await asyncio.wait_for(finished.wait(), args.timeout)
        except TimeoutError:
            tally.extra["timed_out"] = True
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown path

    worker = faust.Worker(app, loglevel=logging.WARNING, quiet=True)
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    out.write(tally.line() + "\n")
    out.flush()
    return 0 if tally.events >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
