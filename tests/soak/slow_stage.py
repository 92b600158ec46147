"""A user stage that only takes time: batches queue behind it (tests/soak/test_idle_backlog.py).

Async, so the worker's event loop — the fetch loop, the other agents and the 1 s tick
that closes idle windows — goes on while it waits, exactly as with a slow service.
"""

from __future__ import annotations

import asyncio

from stream.stages.user import StageBatch

#: Seconds per batch: with the chain's channels full, a batch waits several of these.
DELAY_S = 1.5


async def crawl(batch: StageBatch) -> None:
    await asyncio.sleep(DELAY_S)
