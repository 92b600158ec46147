"""Pause input partitions for a reason; resume them when no reason is left.

Two independent reasons stop the worker from fetching:

* ``backpressure`` — the producer's queue is above its high-water mark, so
  fetching more would only buffer more in memory (resumed below the low-water
  mark);
* ``lookup`` — the enrichment dependency is unavailable and
  ``enrich.on_lookup_failure`` is ``pause`` (resumed when its breaker lets a
  probe through).

Each reason is switched on and off on its own and a partition fetches again
only when none holds it. Pausing keeps the consumer in its group (librdkafka
heartbeats from its own thread and ``consume`` keeps being called), so a paused
worker is not rebalanced away. librdkafka does not pause newly assigned
partitions, so :meth:`PartitionPauser.assigned` re-applies an active pause to
them. The number of paused partitions is ``stream_paused_partitions``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Final

from confluent_kafka import Consumer, TopicPartition

from stream.observability import metrics

log = logging.getLogger(__name__)

BACKPRESSURE: Final = "backpressure"
LOOKUP: Final = "lookup"


class PartitionPauser:
    """Tracks why the input is paused and applies it to the consumer."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self._consumer = consumer
        self._topic = topic
        self.reasons: set[str] = set()
        self._paused: set[int] = set()

    @property
    def paused(self) -> bool:
        return bool(self.reasons)

    def hold(self, reason: str, owned: Collection[int], detail: str = "") -> None:
        """Pause every owned partition because of ``reason`` (idempotent)."""
        if reason not in self.reasons:
            self.reasons.add(reason)
            log.warning("pausing input partitions %s: %s %s", sorted(owned), reason, detail)
        self._pause(owned)

    def release(self, reason: str, owned: Collection[int], detail: str = "") -> None:
        """Drop ``reason``; resume the owned partitions if no other reason holds them."""
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if self.reasons:
            return
        log.info("resuming input partitions %s: %s cleared %s", sorted(owned), reason, detail)
        if self._paused:
            self._consumer.resume([TopicPartition(self._topic, p) for p in sorted(self._paused)])
        self._paused.clear()
        metrics.paused_partitions.set(0)

    def assigned(self, partitions: Collection[int]) -> None:
        """Newly assigned partitions start fetching; pause them if a reason is active."""
        if self.reasons:
            self._pause(partitions)

    def revoked(self, partitions: Collection[int]) -> None:
        self._paused.difference_update(partitions)
        metrics.paused_partitions.set(len(self._paused))

    def _pause(self, partitions: Collection[int]) -> None:
        new = [p for p in partitions if p not in self._paused]
        if new:
            self._consumer.pause([TopicPartition(self._topic, p) for p in new])
            self._paused.update(new)
        metrics.paused_partitions.set(len(self._paused))
