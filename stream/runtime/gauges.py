"""Gauges refreshed about once a second: lag, data quality, window state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from stream.checkpoint import Checkpointer
from stream.fieldpaths import ABSENT
from stream.observability import metrics
from stream.stages.correlate import Correlator


def update_gauges(
    consumer: Consumer,
    topic: str,
    owned: Iterable[int],
    checkpointer: Checkpointer,
    correlator: Correlator,
    optional_fields: Mapping[str, Callable[[Any], Any]],
    sample: list[Any],
) -> None:
    """Consumer lag per owned partition, optional-field presence, window state size."""
    for p in owned:
        tp = TopicPartition(topic, p)
        try:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
        except Exception:
            continue
        position = checkpointer.pending.get(p, checkpointer.committed.get(p))
        if high >= 0 and position is not None:
            metrics.consumer_lag.labels(topic=topic, partition=str(p)).set(max(high - position, 0))
    if sample:
        for path, get in optional_fields.items():
            present = sum(1 for e in sample if get(e) not in ABSENT)
            metrics.field_presence_ratio.labels(field=path).set(present / len(sample))
    for rule, keys in correlator.stats().items():
        if rule == "bytes":
            metrics.window_state_bytes.set(keys)
        else:
            metrics.window_state_keys.labels(rule=rule).set(keys)
