"""The ceiling: consume the input and produce every record unchanged, nothing else.

It uses the worker's own client settings (``stream.app.CONSUMER_DEFAULTS`` and the
worker's ``OutputProducer``) and the worker's fetch shape (non-blocking
``consume(10000, 0)``, a 5 ms nap when nothing is there, then ``produce_values``),
but no decoding, no stages, no commits: what is left is the
cost of the Python client and the broker on this machine, the most any Python
pipeline here could do. Prints one JSON line like the peers.

    python -m benchmarks.harness.ceiling --bootstrap B --input T --output T2 --group G --expect N
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks.harness.procstats import own_peak_rss_bytes

BATCH = 10_000
#: As the worker's fetch loop: a blocking consume(n, t) would wait for n records or t
#: seconds and add up to t of latency at low rates.
IDLE_SLEEP_S = 0.005


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness.ceiling",
        description="Copy --expect records from --input to --output with the worker's clients.",
    )
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from confluent_kafka import Consumer

    from stream.app import CONSUMER_DEFAULTS
    from stream.kafka.client import client_config
    from stream.kafka.producer import OutputProducer

    base = {"bootstrap.servers": args.bootstrap}
    consumer = Consumer(client_config(base, **CONSUMER_DEFAULTS, **{"group.id": args.group}))
    producer = OutputProducer(base)
    consumer.subscribe([args.input])
    output = args.output
    consumed = 0
    first: float | None = None
    deadline = time.monotonic() + args.timeout
    while consumed < args.expect and time.monotonic() < deadline:
        batch = consumer.consume(BATCH, 0)
        if not batch:
            time.sleep(IDLE_SLEEP_S)
            continue
        if first is None:
            first = time.monotonic()
        records = [m for m in batch if m.error() is None]
        producer.produce_values(output, [m.value() for m in records], [m.key() for m in records])
        producer.poll()
        consumed += len(records)
    producer.flush(60.0)
    seconds = time.monotonic() - first if first is not None else 0.0
    consumer.close()
    result: dict[str, Any] = {
        "peer": "ceiling",
        "events": consumed,
        "seconds": round(seconds, 3),
        "events_per_s": round(consumed / seconds, 1) if seconds > 0 else 0.0,
        "peak_rss_bytes": own_peak_rss_bytes(),
    }
    print(json.dumps(result), flush=True)
    return 0 if consumed >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
