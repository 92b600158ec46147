"""Offsets out of range: make librdkafka's silent ``auto.offset.reset`` visible.

When a group's next offset is no longer on the broker (retention deleted it, or an
operator ran ``kafka-delete-records``, before the group consumed it), librdkafka
applies ``auto.offset.reset`` by itself and tells the application nothing: no error
event reaches ``consume()``, only a WARNING on its log callback
(``OFFSET ... <topic> [<p>]: offset reset (at offset N ...) to BEGINNING ...``). The
records in between are skipped for good, so an operator must hear of it:
:class:`OffsetResetWatch` is the consumer's ``logger``; it turns each such warning into
one log line and ``stream_offsets_reset_total{topic,partition}``, and forwards every
librdkafka line as before. It runs inside ``consume()`` (wherever that is called).

``auto.offset.reset=error`` reaches ``consume()`` as ``_AUTO_OFFSET_RESET`` instead;
the runner stops the worker on it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from stream.kafka.client import LIBRDKAFKA_LOGGER
from stream.observability import metrics

log = logging.getLogger(__name__)

#: ``<topic> [<partition>]: offset reset (at offset <N> ...) to <target> ...: <reason>``
_RESET = re.compile(
    r"(?P<topic>\S+) \[(?P<partition>\d+)\]: offset reset \(at (?:offset )?(?P<offset>[^ ,)]+)"
    r".*?\) to (?:offset )?(?P<target>[^ (:]+)"
)


class OffsetResetWatch:
    """A librdkafka ``logger`` (``log(level, fmt, facility, name, text)``) that reports resets."""

    def __init__(self, policy: str, forward: logging.Logger = LIBRDKAFKA_LOGGER) -> None:
        self._policy = policy
        self._forward = forward

    def log(self, level: int, msg: str, *args: Any) -> None:
        if level >= logging.WARNING and len(args) == 3 and args[0] == "OFFSET":
            found = _RESET.search(str(args[2]))
            if found is not None:
                self.reset(
                    found["topic"], int(found["partition"]), found["offset"], found["target"]
                )
        self._forward.log(level, msg, *args)

    def reset(self, topic: str, partition: int, offset: str, target: str) -> None:
        metrics.offsets_reset_total.labels(topic=topic, partition=str(partition)).inc()
        log.warning(
            "offset %s of %s[%d] is no longer on the broker (retention or delete-records "
            "removed it before this group consumed it): auto.offset.reset=%s, resuming at %s; "
            "the records in between are skipped",
            offset,
            topic,
            partition,
            self._policy,
            target.lower(),
        )
