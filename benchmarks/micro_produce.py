"""What a lineage header and a per-record delivery callback cost the producing process.

Produces ``--records`` records of ~230 bytes (keyed, 8 partitions, the worker's producer
settings: lz4, idempotent, linger 5 ms) four ways — with or without one
``stream.input`` header (``lineage: input``), with a per-record delivery callback (the
at-least-once acknowledgement epochs) or with ``delivery.report.only.error`` (what
exactly_once uses) — and prints process CPU µs per record, librdkafka's threads
included, plus the main thread's time in ``poll``/``flush`` (serving the reports).

    stream broker start --port 39092      # or any broker
    PYTHONPATH=. python benchmarks/micro_produce.py --bootstrap 127.0.0.1:39092
"""

from __future__ import annotations

import argparse
import contextlib
import time

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "micro-produce"
BATCH = 10_000


class _Acks:
    def __init__(self) -> None:
        self.count = 0

    def ack(self, err: KafkaError | None, msg: Message) -> None:
        self.count += 1


def _run(bootstrap: str, n: int, callback: bool, headers: bool) -> str:
    values = [b'{"n":%d,"payload":"%s"}' % (i, b"x" * 200) for i in range(n)]
    keys = [b"key-%d" % (i % 50) for i in range(n)]
    lineage = [[("stream.input", b"events/3/%d" % i)] for i in range(n)]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "batch.num.messages": 100_000,
            "batch.size": 1_000_000,
            "delivery.report.only.error": not callback,
            "on_delivery": _Acks().ack,
        }
    )
    producer.produce(TOPIC, b"warm-up")
    producer.flush(30)
    acks = _Acks()
    ack = acks.ack if callback else None
    produce = producer.produce
    serving = 0.0
    start = time.process_time()
    for first in range(0, n, BATCH):
        for i in range(first, min(first + BATCH, n)):
            if headers:
                produce(TOPIC, values[i], keys[i], on_delivery=ack, headers=lineage[i])
            else:
                produce(TOPIC, values[i], keys[i], on_delivery=ack)
        before = time.thread_time()
        producer.poll(0)
        serving += time.thread_time() - before
    before = time.thread_time()
    producer.flush(60)
    serving += time.thread_time() - before
    cpu = time.process_time() - start
    return (
        f"callback={callback!s:5} header={headers!s:5} {cpu / n * 1e6:5.2f} µs/record "
        f"(poll/flush on the main thread {serving / n * 1e6:.2f}; reports {acks.count})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, 8, 1)]).values():
        with contextlib.suppress(KafkaException):  # it exists already
            future.result()
    for callback, headers in ((True, True), (False, True), (True, False), (False, False)):
        print(_run(args.bootstrap, args.records, callback, headers))


if __name__ == "__main__":
    main()
