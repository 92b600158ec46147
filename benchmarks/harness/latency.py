"""End-to-end latency at a fixed offered rate: produce time of an input record to
append time of its enriched output record, matched by ``event_id``.

Each latency run gets its own, empty input topic, so the system is caught up
by construction. After a warm-up (``WARMUP`` records, waited for until they
are all out) the load generator offers ``rate`` events/s for ``seconds``; the
input records' timestamps are the producer's CreateTime, the output topics
stamp LogAppendTime (see ``cluster``). Both clocks are this machine's, so no
skew enters. Only events produced during the timed load are counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import msgspec
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from benchmarks.harness.cluster import Cluster, TopicSet
from benchmarks.harness.console import Console
from benchmarks.harness.load import produce
from benchmarks.harness.rows import Latency
from benchmarks.harness.systems import System, WorkerGroup

WARMUP: Final = 1000
#: The steady part of a latency run starts this long after its first event was produced.
STEADY_AFTER_S: Final = 2.0
#: The start-up breakdown covers the first seconds of load in 100 ms steps.
START_S: Final = 3.0
START_STEP_MS: Final = 100
#: Extra time, beyond the load itself, for the last outputs to appear.
DRAIN_S: Final = 60.0


class _EventId(msgspec.Struct):
    event_id: str


_decode_id = msgspec.json.Decoder(_EventId).decode


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def wait_for(predicate: Callable[[], bool], deadline: float, what: str, system: System) -> None:
    while not predicate():
        if reason := system.crashed():
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen in time")
        time.sleep(0.2)


def per_second(sent_ms: list[int], latencies: list[float]) -> list[dict[str, float]]:
    """Latency percentiles per second of produce time, from the first event's second."""
    if not sent_ms:
        return []
    first = min(sent_ms) // 1000
    buckets: dict[int, list[float]] = {}
    for sent, latency in zip(sent_ms, latencies, strict=True):
        buckets.setdefault(sent // 1000 - first, []).append(latency)
    timeline = []
    for second in sorted(buckets):
        ordered = sorted(buckets[second])
        timeline.append(
            {
                "t": second,
                "events": len(ordered),
                "p50": percentile(ordered, 50),
                "p99": percentile(ordered, 99),
                "max": ordered[-1],
            }
        )
    return timeline


def steady_p99(
    sent_ms: list[int], latencies: list[float], after_s: float = STEADY_AFTER_S
) -> float | None:
    """p99 of the events produced ``after_s`` seconds or more after the first one."""
    if not sent_ms:
        return None
    cut = min(sent_ms) + after_s * 1000
    steady = sorted(lat for sent, lat in zip(sent_ms, latencies, strict=True) if sent >= cut)
    return percentile(steady, 99) if steady else None


def start_breakdown(
    sent_ms: list[int],
    latencies: list[float],
    seconds: float = START_S,
    step_ms: int = START_STEP_MS,
) -> list[dict[str, float]]:
    """The first ``seconds`` of load in ``step_ms`` steps from the first event: how many
    events were produced in each step (a burst shows as more than rate x step) and their
    latency — what the start-up spike is made of."""
    if not sent_ms:
        return []
    first = min(sent_ms)
    buckets: dict[int, list[float]] = {}
    for sent, latency in zip(sent_ms, latencies, strict=True):
        step = (sent - first) // step_ms
        if step * step_ms < seconds * 1000:
            buckets.setdefault(step, []).append(latency)
    out = []
    for step in sorted(buckets):
        ordered = sorted(buckets[step])
        out.append(
            {
                "t": round(step * step_ms / 1000, 3),
                "events": len(ordered),
                "p50": percentile(ordered, 50),
                "p99": percentile(ordered, 99),
                "max": ordered[-1],
            }
        )
    return out


class StartWatcher(threading.Thread):
    """What the system did in the first ``START_S`` seconds of load, every 100 ms: its
    progress (a worker's consumed counter; a program's output records) and, for a
    worker, its checkpoints, their time and its GC pauses (``/metrics``). Read beside
    ``start_breakdown``: a stall shows as progress that stops while checkpoint or GC
    seconds grow, a slow first fetch as progress that starts late."""

    def __init__(self, system: System, seconds: float = START_S + 0.5) -> None:
        super().__init__(daemon=True, name="latency-start-watcher")
        self.system = system
        self.seconds = seconds
        self.samples: list[dict[str, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.is_set() and time.monotonic() - started < self.seconds:
            at = time.monotonic() - started
            sample: dict[str, float] = {"t": round(at, 2)}
            try:
                if isinstance(self.system, WorkerGroup):
                    metrics = [m for m in self.system._scrape() if m is not None]
                    for name, key in (
                        ("stream_events_consumed_total", "consumed"),
                        ("stream_checkpoints_total", "checkpoints"),
                        ("stream_checkpoint_duration_seconds_sum", "checkpoint_s"),
                        ("stream_gc_pause_seconds_sum", "gc_s"),
                    ):
                        sample[key] = round(sum(m.total(name) for m in metrics), 4)
                else:
                    sample["outputs"] = self.system.outputs()
            except Exception:  # a missed sample is no reason to fail the run
                pass
            else:
                self.samples.append(sample)
            self._stop_event.wait(max(0.0, 0.1 - (time.monotonic() - started - at)))

    def stop(self) -> list[dict[str, float]]:
        self._stop_event.set()
        self.join(5)
        return self.samples


class VisibilityWatcher(threading.Thread):
    """A ``read_committed`` consumer of the enriched topic during the load: the wall-clock
    time (ms) each event id first became visible to it. For an exactly-once system the
    output's ``LogAppendTime`` is when the record was *written*; a read_committed reader
    sees it only when its transaction commits, which is the latency its consumers get."""

    def __init__(self, bootstrap: str, topic: str, start: dict[int, int]) -> None:
        super().__init__(daemon=True, name="latency-visibility-watcher")
        self.bootstrap, self.topic, self.start_offsets = bootstrap, topic, start
        self.seen: dict[str, int] = {}
        self._stop_event = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        import uuid

        from confluent_kafka import Consumer, TopicPartition

        from stream.loadgen.broker import quiet_config

        consumer = Consumer(
            quiet_config(self.bootstrap)
            | {
                "group.id": f"bench-visibility-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in self.start_offsets.items()])
        self.ready.set()
        seen = self.seen
        try:
            while not self._stop_event.is_set():
                batch = consumer.consume(10_000, 0.02)
                now = int(time.time() * 1000)
                for m in batch:
                    if m.error() is not None:
                        continue
                    try:
                        seen.setdefault(_decode_id(m.value() or b"").event_id, now)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
        finally:
            consumer.close()

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join(10)
        return self.seen


def planned_events(rate: float, seconds: float) -> int:
    return round(rate * seconds)


def measure_latency(
    system: System,
    cluster: Cluster,
    topics: TopicSet,
    rate: float,
    seconds: float,
    seed: int,
    invalid_ratio: float,
    deadline: float,
    console: Console,
    passthrough: bool = False,
    visibility: bool = False,
) -> tuple[Latency, list[str]]:
    """Run the offered load through the already started ``system``; the latency and notes.

    ``passthrough``: the system copies every record (the ceiling), so every input with
    an event id is expected out, not only the valid ones. ``visibility``: the system
    writes in transactions (exactly_once); each output's time is when a read_committed
    consumer first received it (``VisibilityWatcher``), not its LogAppendTime.
    """
    notes: list[str] = []
    if isinstance(system, WorkerGroup):
        wait_for(system.ready, deadline, "worker ready with partitions assigned", system)
    produce(cluster.bootstrap, topics.input, WARMUP, seed=seed + 1, invalid_ratio=invalid_ratio)
    wait_for(lambda: system.outputs() >= WARMUP, deadline, "warm-up records processed", system)

    input_start = cluster.end_offsets(topics.input)
    output_start = cluster.end_offsets(topics.enriched)
    console.say(f"{system.name}: offering {rate:,.0f} events/s for {seconds:g}s")
    visible: VisibilityWatcher | None = None
    if visibility:
        visible = VisibilityWatcher(cluster.bootstrap, topics.enriched, output_start)
        visible.start()
        visible.ready.wait(10)
    watcher = StartWatcher(system)
    watcher.start()
    report = produce(
        cluster.bootstrap,
        topics.input,
        planned_events(rate, seconds),
        seed=seed + 2,
        invalid_ratio=invalid_ratio,
        rate=rate,
        duration=seconds,
    )
    if not report.ok:
        notes.append(f"load generator: {report.first_error or 'not every record acknowledged'}")
    start_system = watcher.stop()
    drain_deadline = min(deadline, time.monotonic() + DRAIN_S)
    total = WARMUP + report.acknowledged
    wait_for(lambda: system.outputs() >= total, drain_deadline, "all outputs", system)
    visible_at: dict[str, int] | None = None
    if visible is not None:
        valid = report.acknowledged - report.invalid
        wait_for(
            lambda: len(visible.seen) >= valid,
            drain_deadline,
            "all outputs visible read_committed",
            system,
        )
        visible_at = visible.stop()

    produced_at: dict[str, int] = {}
    for batch in cluster.batches(topics.input, input_start):
        for m in batch:
            try:
                produced_at[_decode_id(m.value() or b"").event_id] = m.timestamp()[1]
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a deliberately invalid record: no enriched output to match
    latencies: list[float] = []
    sent_at: list[int] = []
    stamp_types: set[int] = set()
    if visible_at is not None:
        for event_id, seen_ms in visible_at.items():
            sent = produced_at.get(event_id)
            if sent is not None:
                latencies.append(float(seen_ms - sent))
                sent_at.append(sent)
        notes.append(
            "latency to read_committed visibility (a consumer's receipt time), not LogAppendTime"
        )
    for batch in cluster.batches(topics.enriched, output_start) if visible_at is None else iter(()):
        for m in batch:
            try:
                sent = produced_at.get(_decode_id(m.value() or b"").event_id)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # the ceiling copies invalid records too
            if sent is not None:
                kind, appended = m.timestamp()
                stamp_types.add(kind)
                latencies.append(float(appended - sent))
                sent_at.append(sent)
    if stamp_types - {TIMESTAMP_LOG_APPEND_TIME}:
        notes.append("output timestamps are not LogAppendTime: latency is not append time")
    timeline = per_second(sent_at, latencies)
    steady = steady_p99(sent_at, latencies)
    start = start_breakdown(sent_at, latencies)
    latencies.sort()
    expected = len(produced_at) if passthrough else report.acknowledged - report.invalid
    if len(latencies) != expected:
        notes.append(f"{len(latencies):,} outputs matched, {expected:,} expected")
    latency = Latency(
        offered_rate=rate,
        achieved_rate=report.events_per_s,
        sent=report.acknowledged,
        expected=expected,
        matched=len(latencies),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else float("nan"),
        timeline=timeline,
        steady_p99_ms=steady,
        start=start,
        start_system=start_system,
    )
    return latency, notes
