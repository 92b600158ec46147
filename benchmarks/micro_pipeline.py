"""The worker's Python per-event cost without Kafka: the chain and output routing in-process.

Runs a pipeline's validate → enrich → correlate links and the output routing (lineage
headers, keys) through :class:`stream.testing.PipelineDriver` on the load generator's
records, and prints process CPU µs per input event (best of ``--rounds`` batches of
``--batch``). What it leaves out is what the client costs (``consume`` building
``Message`` objects, ``produce``, delivery reports) and the Faust hand-offs: on a
machine shared with other jobs this is the steady number to compare before/after a
change of the hot path, where ``stream bench``'s CPU-s/M moves by ±10% between runs.

    PYTHONPATH=. python benchmarks/micro_pipeline.py                     # observability
    PYTHONPATH=. python benchmarks/micro_pipeline.py --workload orders
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

from stream.loadgen.generator import EventGenerator, GeneratorConfig
from stream.loadgen.orders import FX_RATES, OrderConfig, customer_table, generate_orders
from stream.testing import PipelineDriver

PIPELINES = Path(__file__).resolve().parent.parent / "stream" / "pipelines"


def _observability(events: int) -> tuple[PipelineDriver, list[tuple[bytes | None, bytes]]]:
    gen = EventGenerator(GeneratorConfig())
    records: list[tuple[bytes | None, bytes]] = []
    block = 0
    while len(records) < events:
        b = gen.block(block)
        records.extend(zip(b.keys, b.values, strict=True))
        block += 1
    first = gen.block(0).event_times[0]
    driver = PipelineDriver(
        PIPELINES / "observability.yaml", tables={"service": {}}, now_ms=first + 60_000
    )
    return driver, records[:events]


def _orders(events: int) -> tuple[PipelineDriver, list[tuple[bytes | None, bytes]]]:
    config = OrderConfig()
    records = [(r.key, r.value) for r in generate_orders(events, config)]
    tables = {
        "customer": customer_table(config.customers),
        "fx": {cur: {"rate": rate} for cur, rate in FX_RATES.items()},
    }
    driver = PipelineDriver(
        PIPELINES / "orders.yaml", tables=tables, now_ms=config.start_ms + 3_600_000
    )
    return driver, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("observability", "orders"), default="observability")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    build = _orders if args.workload == "orders" else _observability
    driver, records = build(args.batch * args.rounds)
    best = float("inf")
    outputs = 0
    for r in range(args.rounds):
        for key, value in records[r * args.batch : (r + 1) * args.batch]:
            driver.send(
                value, key=key, partition=zlib.crc32(key or b"") % 8, timestamp_ms=driver.now_ms
            )
        start = time.process_time()
        out = driver.run()
        best = min(best, time.process_time() - start)
        outputs += len(out.enriched) + len(out.dlq)
    assert outputs == len(records), (outputs, len(records))  # in = enriched + DLQ
    print(f"{args.workload}: {best / args.batch * 1e6:.2f} µs per event (best of {args.rounds})")


if __name__ == "__main__":
    main()
