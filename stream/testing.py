"""Test a pipeline without a broker: :class:`PipelineDriver`.

In the style of Kafka Streams' ``TopologyTestDriver``: the driver compiles a
pipeline file exactly as a worker does and runs records through the same chain —
the same validate, enrich, user-stage and correlate links and the same output
routing — in-process, with tables you give it instead of Kafka topics or services,
and a clock you move. What it returns are the records the worker would write, byte
for byte: enriched records, dead-letter records with their headers, records user
stages emitted, and correlations::

    from stream.testing import PipelineDriver

    driver = PipelineDriver("orders.yaml", tables={"customer": {"c1": {"segment": "gold"}},
                                                   "fx": {"USD": {"rate": 0.9}}})
    driver.send({"order_id": "o1", "customer_id": "c1", ...}, key="c1")
    out = driver.run()
    assert out.enriched[0].json()["enrichment"]["customer"] == {"segment": "gold"}
    driver.advance(minutes=15)              # idle windows close as the wall clock moves
    assert [c.json()["rule"] for c in driver.run().correlations] == ["big-spender"]

Every join needs a table (``tables={join name: {key: value}}``) or a lookup object
(``lookups=``) — HTTP and PostgreSQL joins included, so a test never leaves the
process. Event time comes from the records; the wall clock (``now_ms``, default the
time the driver was made) decides "in the future" checks and idle windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from stream.config import load_settings
from stream.pipeline import build_stages
from stream.runtime.outputs import Headers, OutputRouter
from stream.runtime.steps import CorrelateStep, DependencyUnavailable, EnrichStep, ValidateStep
from stream.runtime.user_steps import UserStep
from stream.runtime.work import WorkBatch
from stream.stages.enrich import ReferenceLookup, ReferenceTable


@dataclass(frozen=True)
class OutputRecord:
    """One record the pipeline wrote."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    def json(self) -> Any:
        """The value parsed as JSON."""
        return orjson.loads(self.value or b"null")

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Outputs:
    """What one :meth:`PipelineDriver.run` (or a clock move) wrote, per kind of topic."""

    enriched: list[OutputRecord] = field(default_factory=list)
    dlq: list[OutputRecord] = field(default_factory=list)
    correlations: list[OutputRecord] = field(default_factory=list)
    #: Late events (``correlate.late_policy: topic``): original records, ``stream.late.*`` headers.
    late: list[OutputRecord] = field(default_factory=list)
    #: Records user stages emitted, by topic.
    extra: dict[str, list[OutputRecord]] = field(default_factory=dict)

    def all(self) -> list[OutputRecord]:
        return [
            *self.enriched,
            *self.dlq,
            *self.correlations,
            *self.late,
            *(r for rs in self.extra.values() for r in rs),
        ]


class _Record:
    """An input record with the ``confluent_kafka.Message`` methods the chain reads
    (the client's own Message cannot be built from Python before 2.13)."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        timestamp_ms: int,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers
        self._timestamp = (TIMESTAMP_CREATE_TIME, timestamp_ms)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> None:
        return None


class _Capture:
    """A producer that keeps what it is given (the router's only dependency on Kafka)."""

    def __init__(self) -> None:
        self.records: list[OutputRecord] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int = -1,
        headers: Headers | None = None,
        timestamp: int = 0,
    ) -> None:
        self.records.append(OutputRecord(topic, key, value, list(headers or [])))

    def produce_values(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: Sequence[Headers | None] | None = None,
    ) -> None:
        hdrs = headers or [None] * len(values)
        for value, key, h in zip(values, keys, hdrs, strict=True):
            self.records.append(OutputRecord(topic, key, value, list(h or [])))


class PipelineDriver:
    """Runs a pipeline file's chain in-process (see the module docstring)."""

    def __init__(
        self,
        pipeline_file: str | Path | None = None,
        *,
        tables: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        lookups: Mapping[str, ReferenceLookup] | None = None,
        now_ms: int | None = None,
    ) -> None:
        self.settings = load_settings(pipeline_file)
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        given = dict(lookups or {})
        for name, rows in (tables or {}).items():
            table = ReferenceTable()
            table.apply([(k, dict(v)) for k, v in rows.items()])
            given[name] = table
        missing = [j.name for j in self.settings.joins if j.name not in given]
        if missing:
            raise ValueError(f"give tables= or lookups= for the joins {missing}")
        stages = build_stages(self.settings, given, clock=lambda: self.now_ms / 1000)
        self.stages = stages
        self._capture = _Capture()
        self._router = OutputRouter(
            self.settings, self._capture, output_key=stages.output_key, encoder=stages.encoder
        )
        topic = self.settings.topics.input
        users = stages.user_steps
        self._steps: list[Any] = [
            ValidateStep(stages.validator, stages.decoder, topic),
            *(u for u in users if u.spec.after == "validate"),
            EnrichStep(stages.enricher),
            *(u for u in users if u.spec.after == "enrich"),
            CorrelateStep(stages.correlator, self._router.correlations, {}, with_offsets=True),
        ]
        self._pending: list[Message] = []
        self._next_offset: dict[int, int] = {}

    # -- input ------------------------------------------------------------------------------------

    def send(
        self,
        value: bytes | str | Mapping[str, Any] | None,
        *,
        key: bytes | str | None = None,
        partition: int = 0,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one input record (a dict is JSON-encoded, a str UTF-8 encoded)."""
        if isinstance(value, Mapping):
            raw: bytes | None = orjson.dumps(value)
        elif isinstance(value, str):
            raw = value.encode()
        else:
            raw = value
        offset = self._next_offset.get(partition, 0)
        self._next_offset[partition] = offset + 1
        when = self.now_ms if timestamp_ms is None else timestamp_ms
        record = _Record(
            self.settings.topics.input,
            partition,
            offset,
            key.encode() if isinstance(key, str) else key,
            raw,
            list(headers) if headers else None,
            when,
        )
        self._pending.append(cast(Message, record))

    def send_many(self, values: Iterable[Any], **options: Any) -> None:
        for value in values:
            self.send(value, **options)

    # -- running ----------------------------------------------------------------------------------

    def run(self) -> Outputs:
        """Process the queued records as one batch; what the pipeline wrote."""
        records, self._pending = self._pending, []
        if records:
            work = WorkBatch(0, records, [m.partition() or 0 for m in records], self.now_ms)
            for step in self._steps:
                if isinstance(step, UserStep) and step.is_async:
                    asyncio.run(step.run_async(work))
                else:
                    step.run(work)
            self._router.route(work)
        return self._take()

    def advance(self, *, ms: int = 0, seconds: float = 0, minutes: float = 0) -> Outputs:
        """Move the wall clock; windows of partitions idle that long close."""
        self.now_ms += int(ms + seconds * 1000 + minutes * 60_000)
        closed = self.stages.correlator.advance_idle_by_partition(self.now_ms)
        for partition, correlations in closed.items():
            self._router.correlations(correlations, partition)
        return self._take()

    def _take(self) -> Outputs:
        topics = self.settings.topics
        out = Outputs()
        for record in self._capture.records:
            if record.topic == topics.enriched:
                out.enriched.append(record)
            elif record.topic == topics.dlq:
                out.dlq.append(record)
            elif record.topic == topics.correlations:
                out.correlations.append(record)
            elif record.topic == self.settings.late_topic:
                out.late.append(record)
            else:
                out.extra.setdefault(record.topic, []).append(record)
        self._capture.records = []
        return out


__all__ = ["DependencyUnavailable", "OutputRecord", "Outputs", "PipelineDriver"]
