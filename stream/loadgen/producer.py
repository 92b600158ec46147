"""Send generated events to Kafka at an exact rate, from one or several processes.

Measured on the 2-core development machine (200k events of ~230 bytes,
4 partitions, Apache Kafka on the same cores), what shaped this module:

* ``produce()`` from Python costs about 1 µs; a per-message delivery callback
  adds about 1.2 µs more. So delivery reports are requested for failures only
  (``delivery.report.only.error``) and "acknowledged" is derived:
  ``sent - failed - len(producer)`` (``len`` counts what is still queued or in
  flight). The final numbers come after ``flush``, when nothing is in flight.
* ``produce_batch`` needs a dict per message and was slower than a plain loop.
* Big batches (``linger.ms=20``, ``batch.size`` 1 MB) with lz4 take most load
  off the broker, which is what limits throughput on a small machine.

Rate control is a token bucket refilled from ``RateSchedule.allowed`` every
~10 ms. With ``processes=N`` each process takes every N-th block of the
generator (``blocks_for``) at ``rate / N``, so the records sent are the same as
one process would send for that seed, only interleaved differently.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableSequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from typing import Any, Final, TextIO

from confluent_kafka import KafkaError, KafkaException, Producer

from stream.errors import ConfigError
from stream.loadgen.broker import quiet_config
from stream.loadgen.formats import Framer
from stream.loadgen.generator import BLOCK_SIZE, Block, EventGenerator, GeneratorConfig, blocks_for
from stream.loadgen.progress import Progress
from stream.loadgen.rate import RateSchedule

TICK_S: Final = 0.01
#: Counter slots per process in the shared array.
_SENT, _FAILED, _PENDING, _INVALID, _LATE = range(5)
_SLOTS: Final = 5
_START_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class LoadOptions:
    """What ``run_load`` sends, where, and how fast."""

    bootstrap: str
    topic: str = "events"
    #: Stop after this many events (``None``: until ``duration`` or interrupted).
    count: int | None = None
    #: Stop after this many seconds.
    duration: float | None = None
    #: Target events/s over all processes; 0 = as fast as possible.
    rate: float = 0.0
    processes: int = 1
    #: Periodic 3x spikes (see ``RateSchedule``).
    burst: bool = False
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    compression: str = "lz4"
    acks: str = "all"
    linger_ms: int = 20
    batch_size: int = 1_000_000
    #: How long to wait for outstanding acknowledgements at the end.
    flush_timeout_s: float = 60.0
    #: Extra librdkafka settings, applied last.
    producer_config: dict[str, Any] = field(default_factory=dict)
    #: Value format: ``json``, or ``avro`` / ``protobuf`` / ``json_schema`` framed for a
    #: schema registry at ``registry_url`` (:mod:`stream.loadgen.formats`).
    format: str = "json"
    registry_url: str | None = None

    def __post_init__(self) -> None:
        if self.count is None and self.duration is None:
            raise ConfigError("count/duration", "give a count, a duration or both")
        if self.count is not None and self.count < 0:
            raise ConfigError("count", "must be >= 0")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError("duration", "must be > 0")
        if self.processes < 1:
            raise ConfigError("processes", "must be >= 1")
        if self.acks not in ("all", "-1", "0", "1"):
            raise ConfigError("acks", "must be all, 0 or 1")
        RateSchedule(self.rate, self.burst)  # validates the rate


@dataclass(frozen=True)
class LoadReport:
    """Outcome of a run. ``acknowledged`` records are durably in the topic."""

    topic: str
    sent: int
    acknowledged: int
    failed: int
    invalid: int
    late: int
    elapsed_s: float
    processes: int
    target_rate: float
    first_error: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.acknowledged / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.acknowledged == self.sent

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "invalid": self.invalid,
            "late": self.late,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "target_rate": self.target_rate,
            "processes": self.processes,
            "first_error": self.first_error,
        }

    def summary(self) -> str:
        target = f"target {self.target_rate:,.0f}/s" if self.target_rate else "unthrottled"
        line = (
            f"loadgen: sent {self.sent:,}  acknowledged {self.acknowledged:,}  "
            f"failed {self.failed:,}  in {self.elapsed_s:,.2f}s  "
            f"= {self.events_per_s:,.0f} events/s ({target}, {self.processes} process"
            f"{'es' if self.processes > 1 else ''}; {self.invalid:,} invalid, {self.late:,} late)"
        )
        if self.first_error:
            line += f"\nloadgen: first delivery error: {self.first_error}"
        return line


#: How often librdkafka reports statistics to :class:`ProducerIdWatch` (one small JSON
#: string each, ignored once the producer id is known).
STATS_INTERVAL_MS: Final = 100
#: How long the warm-up waits for the idempotent producer's id (a fresh broker loads its
#: transaction coordinator first: ~2 s measured).
PID_TIMEOUT_S: Final = 15.0


class ProducerIdWatch:
    """``stats_cb``: notes when the idempotent producer has its producer id.

    The id comes from an InitProducerId round trip after the first connection; until
    it is ``Assigned`` every record waits in the queue. librdkafka reports the state
    only in its statistics (``eos.idemp_state``), so they are read until it is.
    """

    def __init__(self) -> None:
        self.ready = False

    def __call__(self, stats: str) -> None:
        if self.ready:
            return
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            self.ready = json.loads(stats).get("eos", {}).get("idemp_state") == "Assigned"


def producer_config(
    options: LoadOptions,
    on_delivery: Callable[..., None],
    pid_watch: ProducerIdWatch | None = None,
) -> dict[str, Any]:
    idempotent = options.acks in ("all", "-1")
    watch: dict[str, Any] = {}
    if idempotent and pid_watch is not None:
        watch = {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": pid_watch}
    return quiet_config(
        options.bootstrap,
        **{
            "acks": options.acks,
            "enable.idempotence": idempotent,
            "compression.type": options.compression,
            "linger.ms": options.linger_ms,
            "batch.size": options.batch_size,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": 60_000,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
            **watch,
            **options.producer_config,
        },
    )


class _Slice:
    """The blocks one process sends, and the ground truth of what it has sent so far."""

    def __init__(self, options: LoadOptions, process: int) -> None:
        self._generator = EventGenerator(options.generator)
        self._framer = Framer(options.format, options.registry_url, options.topic)
        self._blocks: Iterator[tuple[int, int]] = blocks_for(
            process, options.processes, options.count
        )
        self.current: Block | None = None
        self._invalid_done = 0
        self._late_done = 0

    def next_block(self) -> Block | None:
        if self.current is not None:
            self._invalid_done += len(self.current.invalid)
            self._late_done += len(self.current.late)
        nxt = next(self._blocks, None)
        self.current = None if nxt is None else self._generator.block(*nxt)
        if self.current is not None and self._framer.format != "json":
            self.current = self.current._replace(values=self._framer.frame(self.current.values))
        return self.current

    def invalid_late(self, position: int) -> tuple[int, int]:
        """Invalid and late records sent, given ``position`` records of the current block."""
        invalid, late = self._invalid_done, self._late_done
        if self.current is not None:
            invalid += sum(1 for j in self.current.invalid if j < position)
            late += sum(1 for j in self.current.late if j < position)
        return invalid, late


def _warm_up(producer: Producer, topic: str, pid_watch: ProducerIdWatch | None = None) -> None:
    """Connect, learn the topic's leaders and (idempotent producer) get the producer id
    before the clock starts.

    Otherwise the first few hundred milliseconds of records wait in the queue for
    the connection, metadata and producer id, then leave as one burst: a rate
    that is not the asked one, and a latency spike in every benchmark that is the
    load generator's, not the system's (the bench's start-up spike was traced to the
    producer id round trip). An unreachable broker is reported by the sending loop
    as before; a producer id still missing after :data:`PID_TIMEOUT_S` is left to it.
    """
    with contextlib.suppress(KafkaException):
        producer.list_topics(topic, timeout=10.0)
    if pid_watch is None:
        return
    deadline = time.monotonic() + PID_TIMEOUT_S
    while not pid_watch.ready and time.monotonic() < deadline:
        producer.poll(0.02)


def run_slice(
    options: LoadOptions,
    process: int,
    counters: MutableSequence[int],
    should_stop: Callable[[], bool],
    on_tick: Callable[[float], None] | None = None,
    started: Callable[[], object] | None = None,
) -> str | None:
    """Send this process's share; keeps ``counters[process * 5 ...]`` current.

    Returns the first delivery error, if any. ``on_tick(elapsed)`` runs about
    every 10 ms (progress printing); ``started()`` runs once the producer is
    ready and before the clock starts (a start barrier).
    """
    errors: list[str] = []
    failed = 0

    def on_delivery(error: KafkaError | None, _message: object) -> None:
        nonlocal failed
        if error is not None:
            failed += 1
            if not errors:
                errors.append(error.str())

    pid_watch = ProducerIdWatch()
    producer = Producer(producer_config(options, on_delivery, pid_watch))
    produce = producer.produce
    poll = producer.poll
    topic = options.topic
    schedule = RateSchedule(options.rate / options.processes, options.burst)
    work = _Slice(options, process)
    base = process * _SLOTS
    keys: list[bytes] = []
    values: list[bytes] = []
    position = sent = 0
    exhausted = False

    def publish(pending: int) -> None:
        invalid, late = work.invalid_late(position)
        counters[base + _SENT] = sent
        counters[base + _FAILED] = failed
        counters[base + _PENDING] = pending
        counters[base + _INVALID] = invalid
        counters[base + _LATE] = late

    _warm_up(producer, topic, pid_watch if options.acks in ("all", "-1") else None)
    if started is not None:
        started()
    start = time.monotonic()
    deadline = start + options.duration if options.duration is not None else float("inf")
    next_tick = start
    last_round = False
    while not exhausted and not last_round and not should_stop():
        now = time.monotonic()
        if now >= deadline:
            if schedule.unlimited:
                break
            now, last_round = deadline, True  # top up to exactly rate x duration
        target = sent + 4 * BLOCK_SIZE if schedule.unlimited else schedule.allowed(now - start)
        while sent < target:
            if position == len(values):
                block = work.next_block()
                if block is None:
                    exhausted = True
                    break
                keys, values, position = block.keys, block.values, 0
            end = min(len(values), position + target - sent)
            i = position
            try:
                for i in range(position, end):
                    produce(topic, values[i], keys[i])
                i = end
            except BufferError:
                poll(0.05)  # the local queue is full: let librdkafka drain it
            sent += i - position
            position = i
        poll(0)
        publish(len(producer))
        if on_tick is not None:
            on_tick(now - start)
        if not schedule.unlimited:
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.monotonic()

    flush_deadline = time.monotonic() + options.flush_timeout_s
    while len(producer) and time.monotonic() < flush_deadline:
        producer.flush(min(1.0, max(0.0, flush_deadline - time.monotonic())))
        publish(len(producer))
        if on_tick is not None:
            on_tick(time.monotonic() - start)
    pending = len(producer)
    publish(pending)
    if pending and not errors:
        errors.append(f"{pending} records not acknowledged within {options.flush_timeout_s:g}s")
    return errors[0] if errors else None


def _child_main(
    options: LoadOptions,
    process: int,
    counters: MutableSequence[int],
    stop: Event,
    barrier: Barrier,
    errors: Any,
) -> None:
    """Entry point of a producer process (spawned, so it has no librdkafka threads)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        error = run_slice(
            options,
            process,
            counters,
            stop.is_set,
            started=lambda: barrier.wait(_START_TIMEOUT_S),
        )
    except Exception as exc:  # reported by the parent, not as a traceback per child
        barrier.abort()
        error = f"producer process {process} failed: {exc!r}"
    if error is not None:
        errors.put(error)


def _report(
    options: LoadOptions, counters: MutableSequence[int], elapsed: float, error: str | None
) -> LoadReport:
    totals = [sum(counters[p * _SLOTS + s] for p in range(options.processes)) for s in range(5)]
    sent, failed, pending, invalid, late = totals
    return LoadReport(
        topic=options.topic,
        sent=sent,
        acknowledged=sent - failed - pending,
        failed=failed + pending,
        invalid=invalid,
        late=late,
        elapsed_s=elapsed,
        processes=options.processes,
        target_rate=RateSchedule(options.rate, options.burst).mean_rate,
        first_error=error,
    )


def _totals(options: LoadOptions, counters: MutableSequence[int]) -> tuple[int, int, int]:
    sent = sum(counters[p * _SLOTS + _SENT] for p in range(options.processes))
    failed = sum(counters[p * _SLOTS + _FAILED] for p in range(options.processes))
    pending = sum(counters[p * _SLOTS + _PENDING] for p in range(options.processes))
    return sent, sent - failed - pending, failed


def run_load(options: LoadOptions, *, progress_stream: TextIO | None = sys.stderr) -> LoadReport:
    """Send the events ``options`` describe and wait for their acknowledgements.

    Ctrl-C stops sending, waits for what is in flight and reports what was done.
    """
    progress = Progress(
        progress_stream or sys.stderr,
        count=options.count,
        duration=options.duration,
        enabled=progress_stream is not None,
    )
    if options.processes == 1:
        return _run_in_process(options, progress)
    return _run_in_processes(options, progress)


class _StopOnInterrupt:
    """Turns the first Ctrl-C into a graceful stop (finish, flush, report); a second one aborts."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, _signum: int, _frame: object) -> None:
        self.requested = True
        self._on_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *_exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _run_in_process(options: LoadOptions, progress: Progress) -> LoadReport:
    counters = [0] * _SLOTS
    start = time.monotonic()

    def started() -> None:
        nonlocal start
        start = time.monotonic()
        progress.restart()

    def on_tick(elapsed: float) -> None:
        if progress.due():
            sent, acked, failed = _totals(options, counters)
            progress.update(sent, acked, failed, elapsed)

    with _StopOnInterrupt(lambda: None) as interrupt:
        error = run_slice(options, 0, counters, lambda: interrupt.requested, on_tick, started)
    elapsed = time.monotonic() - start
    progress.finish()
    return _report(options, counters, elapsed, error)


def _run_in_processes(options: LoadOptions, progress: Progress) -> LoadReport:
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", options.processes * _SLOTS, lock=False)
    stop = context.Event()
    barrier = context.Barrier(options.processes + 1)
    errors = context.Queue()
    children = [
        context.Process(
            target=_child_main,
            args=(options, process, counters, stop, barrier, errors),
            name=f"loadgen-{process}",
            daemon=True,
        )
        for process in range(options.processes)
    ]
    first_error: str | None = None
    with _StopOnInterrupt(stop.set):
        for child in children:
            child.start()
        try:
            barrier.wait(_START_TIMEOUT_S)
        except threading.BrokenBarrierError:  # a child failed before it could start
            stop.set()
            first_error = "a producer process failed to start"
        start = time.monotonic()
        progress.restart()
        while any(child.is_alive() for child in children):
            for child in children:
                child.join(0.1)
            sent, acked, failed = _totals(options, counters)
            progress.update(sent, acked, failed, time.monotonic() - start)
    elapsed = time.monotonic() - start
    progress.finish()
    while True:
        try:
            message = errors.get(timeout=0.1)
        except queue.Empty:
            break
        first_error = first_error or message
    crashed = [c.name for c in children if c.exitcode not in (0, None)]
    if crashed and first_error is None:
        first_error = f"producer processes {', '.join(crashed)} exited abnormally"
    return _report(options, counters, elapsed, first_error)
