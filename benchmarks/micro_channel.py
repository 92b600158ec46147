"""Cost of one channel hop per batch in the worker's agent chain (README "Stages as agents").

Builds a Faust app like the worker does (no Kafka client, web off) with a chain of
``--hops`` agents (concurrency 1) joined by bounded channels, sends ``--batches``
objects through it and reports the wall time per batch per hop, against a chain of
plain asyncio queues as a floor. At 10,000 events per batch, divide by 10,000 for
the cost per event.

    PYTHONPATH=. .venv/bin/python benchmarks/micro_channel.py --batches 20000 --hops 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import faust
from faust.app.base import BootStrategy


class _AgentsOnly(BootStrategy):
    enable_kafka = False
    enable_web = False


async def _faust_chain(batches: int, hops: int) -> float:
    app = faust.App("micro-channel", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.boot_strategy = _AgentsOnly(app)
    app.flow_control.resume()
    channels = [app.channel(maxsize=4)] + [app.channel(maxsize=1) for _ in range(hops - 1)]
    done = asyncio.Event()
    seen = 0

    def make(index: int) -> Any:
        async def agent(stream: Any) -> None:
            nonlocal seen
            async for item in stream:
                if index + 1 < hops:
                    await channels[index + 1].send(value=item)
                else:
                    seen += 1
                    if seen == batches:
                        done.set()

        agent.__name__ = f"hop_{index}"
        return agent

    for i in range(hops):
        app.agent(channels[i], name=f"hop-{i}", concurrency=1)(make(i))
    await app.start()
    payload = list(range(10))
    start = time.perf_counter()
    for _ in range(batches):
        await channels[0].send(value=payload)
    await done.wait()
    elapsed = time.perf_counter() - start
    await app.stop()
    return elapsed


async def _queue_chain(batches: int, hops: int) -> float:
    queues = [asyncio.Queue(maxsize=4) for _ in range(hops)]
    done = asyncio.Event()
    seen = 0

    async def agent(index: int) -> None:
        nonlocal seen
        while True:
            item = await queues[index].get()
            if index + 1 < hops:
                await queues[index + 1].put(item)
            else:
                seen += 1
                if seen == batches:
                    done.set()

    tasks = [asyncio.create_task(agent(i)) for i in range(hops)]
    start = time.perf_counter()
    for _ in range(batches):
        await queues[0].put(object())
    await done.wait()
    elapsed = time.perf_counter() - start
    for t in tasks:
        t.cancel()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--hops", type=int, default=3)
    args = parser.parse_args()
    faust_s = asyncio.run(_faust_chain(args.batches, args.hops))
    queue_s = asyncio.run(_queue_chain(args.batches, args.hops))
    per_hop = lambda s: s / args.batches / args.hops * 1e6  # noqa: E731
    result = {
        "batches": args.batches,
        "hops": args.hops,
        "faust_channel_us_per_batch_hop": round(per_hop(faust_s), 1),
        "asyncio_queue_us_per_batch_hop": round(per_hop(queue_s), 1),
        "us_per_event_at_10k_batches": round(per_hop(faust_s) / 10_000, 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
