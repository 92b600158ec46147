"""librdkafka's offset-reset warning becomes one log line and a metric (no broker).

The text below is what librdkafka 2.12 logs (seen on a real broker in
tests/integration/test_operational_edges.py); the parse must keep up with it.
"""

from __future__ import annotations

import logging

import pytest

from stream.kafka.offset_reset import OffsetResetWatch
from stream.observability import metrics

RESET = (
    "events [3]: offset reset (at offset 2 (leader epoch -1), broker 1) to offset BEGINNING "
    "(leader epoch -1): fetch failed due to requested offset not available on the broker: "
    "Broker: Offset out of range"
)


def _count(partition: str) -> float:
    return metrics.offsets_reset_total.labels(topic="events", partition=partition)._value.get()


def test_a_reset_warning_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    forwarded: list[tuple[int, str]] = []

    class Sink(logging.Logger):
        def log(self, level: int, msg: object, *args: object, **_: object) -> None:
            forwarded.append((level, str(msg) % args))

    watch = OffsetResetWatch("earliest", forward=Sink("sink"))
    before = _count("3")
    with caplog.at_level(logging.WARNING, logger="stream.kafka.offset_reset"):
        watch.log(logging.WARNING, "%s [%s] %s", "OFFSET", "rdkafka#consumer-1", RESET)
    assert _count("3") == before + 1
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("offset 2 of events[3] is no longer on the broker")
    assert "auto.offset.reset=earliest, resuming at beginning" in line
    assert len(forwarded) == 1  # librdkafka's own line still goes where it went


def test_other_lines_and_debug_resets_are_only_forwarded() -> None:
    watch = OffsetResetWatch("earliest", forward=logging.getLogger("test.sink"))
    before = _count("3")
    watch.log(logging.DEBUG, "%s [%s] %s", "OFFSET", "c", RESET)  # no committed offset: normal
    watch.log(logging.WARNING, "%s [%s] %s", "FAIL", "c", "connection refused")
    assert _count("3") == before
