"""The benchmark pipeline in Quix Streams 3.x, written the way its documentation shows.

One ``Application``, one ``StreamingDataFrame`` per record with branches:

    input (bytes) -> apply(validate) -+-> filter(invalid) -> raw bytes -> DLQ topic
                                      +-> filter(valid) -> set_timestamp(event time)
                                            -> apply(enrich) -> enriched topic
                                            -> filter(error|critical)
                                               -> tumbling_window(60 s).count().final()
                                               -> filter(count >= 5) -> correlations topic

Windows are keyed by the message key (the source) and kept in RocksDB with a
changelog topic, Quix's defaults. Late events (older than the window + grace)
are dropped by Quix. ``on_message_processed`` counts input records and stops the
application after ``--expect`` of them.

    python -m benchmarks.peers.quix_pipeline --bootstrap B --input T --enriched T2 \
        --correlations T3 --dlq T4 --group G --expect N [--reference-json FILE]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
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

PEER = "quix"
GRACE_MS = 5_000  # the generator's out-of-order jitter is at most 2 s


def main(argv: list[str] | None = None) -> int:
    args = parse_args("quix_pipeline", argv)
    out = reserve_stdout()
    from quixstreams import Application

    reference = load_reference(args.reference_json)
    tally = Tally(PEER, args.expect)
    state_dir = tempfile.mkdtemp(prefix="quix-peer-state-")

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        tally.saw_input()
        if tally.events >= args.expect:
            tally.done_at()
            app.stop()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel=logging.WARNING,
        on_message_processed=on_processed,
    )
    source = app.topic(args.input, value_deserializer="bytes", key_deserializer="str")
    dlq = app.topic(args.dlq, value_serializer="bytes", key_serializer="str")
    enriched = app.topic(args.enriched, value_serializer="json", key_serializer="str")
    correlations = app.topic(args.correlations, value_serializer="json", key_serializer="str")

    def validate(raw: bytes) -> dict[str, Any]:
        return {"raw": raw, "event": parse_event(raw)}

    def count(name: str) -> Any:
        def bump(_value: Any) -> None:
            setattr(tally, name, getattr(tally, name) + 1)

        return bump

    def window_to_correlation(
        window: dict[str, Any], key: str, _timestamp: int, _headers: Any
    ) -> dict[str, Any]:
        return correlation(key, window["start"], window["end"], window["value"])

    def on_late(
        value: Any,
        key: Any,
        timestamp_ms: int,
        late_by_ms: int,
        start: int,
        end: int,
        store_name: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> bool:
        tally.extra["late"] = tally.extra.get("late", 0) + 1
        return False  # counted, not logged: the generator sends late events on purpose

    sdf = app.dataframe(source)
    sdf = sdf.apply(validate)

    invalid = sdf.filter(lambda row: row["event"] is None)
    invalid = invalid.apply(lambda row: row["raw"])
    invalid.update(count("dlq"))
    invalid.to_topic(dlq)

    valid = sdf.filter(lambda row: row["event"] is not None)
    valid = valid.apply(lambda row: row["event"])
    valid = valid.set_timestamp(lambda value, _key, _ts, _headers: value["event_time_ms"])
    valid = valid.apply(lambda event: enrich(event, reference))
    valid.update(count("valid"))
    valid.to_topic(enriched)

    errors = valid.filter(lambda event: event["severity"] in ERROR_SEVERITIES)
    windows = (
        errors.tumbling_window(duration_ms=args.window_ms, grace_ms=GRACE_MS, on_late=on_late)
        .count()
        .final()
    )
    windows = windows.filter(lambda window: window["value"] >= args.threshold)
    found = windows.apply(window_to_correlation, metadata=True)
    found.update(count("correlations"))
    found.to_topic(correlations)

    timer = threading.Timer(args.timeout, app.stop)
    timer.daemon = True
    timer.start()
    app.run()
    timer.cancel()
    out.write(tally.line() + "\n")
    out.flush()
    return 0 if tally.events >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
