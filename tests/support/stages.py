"""User stages the tests name in pipeline files (``python: tests.support.stages:...``)."""

from __future__ import annotations

import asyncio
import os

from stream.stages.user import StageBatch

#: The topic ``echo_slowly`` emits to (the test writes it into the stage's ``topics``).
EXTRA_TOPIC_ENV = "STREAM_TEST_EXTRA_TOPIC"


async def echo_slowly(batch: StageBatch) -> None:
    """Takes a while per batch (so batches wait between agents) and emits one extra record
    per event to the test's extra topic, keyed by the event id."""
    await asyncio.sleep(0.05)
    topic = os.environ[EXTRA_TOPIC_ENV]
    for i, event in enumerate(batch.events):
        batch.emit(topic, {"event_id": event.event_id}, key=event.event_id, of=i)


async def slow_batches(batch: StageBatch) -> None:
    """Holds each batch a while, so the chain fills up behind it (the in-flight bound)."""
    await asyncio.sleep(0.2)
