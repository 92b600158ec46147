"""The Faust application: lifecycle, agents, web views; the hot path moves batches.

Why this shape (DESIGN.md §2): Faust's per-event path costs ~100 µs per event
and tops out near 9k events/s, while a Faust agent whose items are *batches*
runs 30-40x faster. So Faust provides the application — worker lifecycle and
signals, the web server (``/metrics``, ``/health``, ``/ready``), services,
timers, agents — and the data moves like this::

    PipelineService._fetch_loop         confluent-kafka consume(max_batch, 0)
        └─▶ batches channel (in memory, bounded: max_inflight_batches)
              └─▶ process_batches agent  BatchRunner.process(batch) → produce
    PipelineService._tick (1 s timer)   reference updates, idle windows, checkpoint, gauges

Everything that touches the runner holds one lock, so rebalance callbacks (served
inside ``consume``) never race with batch processing; the fetch, checkpoints and the
links that may block (user stages, enrich with HTTP or SQL joins) run in a thread under
it, so the event loop keeps answering ``/health`` — which names a link that has
blocked for too long (:mod:`stream.runtime.liveness`). The Kafka consumer and
producer are confluent-kafka (librdkafka): measured fastest here (DESIGN.md §2).

Faust's own Kafka client (aiokafka consumer, producer, leader assignor) is not
started (:class:`WebAndAgentsOnly`): nothing here uses Faust topics or tables,
and its consumer group cost real failures. A ``kill -9``-ed worker stayed a
member of Faust's group until Faust's 60 s session timeout, and every restarted
worker blocked in Faust's JoinGroup for that long before the pipeline even
started; its rebalances suspend Faust's flow control; and it needed its own
credentials, ACLs and internal topic. The pipeline's consumer group is the only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import faust
import mode
from confluent_kafka import Consumer, KafkaError
from faust.app.base import BootStrategy
from prometheus_client import generate_latest

from stream.config import Settings
from stream.errors import StreamError
from stream.kafka.admin import ensure_partitions
from stream.kafka.client import client_config
from stream.kafka.offset_reset import OffsetResetWatch
from stream.kafka.producer import OutputProducer
from stream.kafka.reader import read_partition_to_end
from stream.lookups import TableFeeds, build_lookups
from stream.observability import gcpause, metrics
from stream.observability.tracing import BatchTracer
from stream.pipeline import build_stages, uses_registry
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.runner import BatchRunner
from stream.runtime.liveness import Liveness, StackWatchdog, Stall
from stream.runtime.steps import ENRICH, DependencyUnavailable
from stream.runtime.user_steps import UserStep
from stream.runtime.work import WorkBatch

log = logging.getLogger(__name__)

#: The poll loop silent for this many times ``stall_timeout``: every thread's stack goes
#: to the log once (:class:`~stream.runtime.liveness.StackWatchdog`).
STACK_DUMP_FACTOR = 4

#: librdkafka consumer settings tuned for large batches (DESIGN.md §2: "tuned fetch settings").
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "isolation.level": "read_committed",
    "enable.partition.eof": False,
    # Prefetch per partition: enough for several 10k batches, but bounded in bytes —
    # librdkafka's default (64 MB per partition) made a worker on 8 partitions ~600 MB RSS.
    "queued.min.messages": 100_000,
    "queued.max.messages.kbytes": 16_384,
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 10_485_760,
    "session.timeout.ms": 15_000,
    # A cooperative rebalance takes two rounds, and members learn of the second one
    # from their next heartbeat: at 3 s a partition moved on scale-out stood still
    # for ~4.5 s, at 1 s for ~2.5 s (tests/integration/test_scaling.py).
    "heartbeat.interval.ms": 1_000,
    # Partitions added to the input topic are found at the next metadata refresh
    # (librdkafka's default: every 5 minutes); one small request per 30 s.
    "topic.metadata.refresh.interval.ms": 30_000,
}

_QUIET_LOGGER = logging.getLogger("stream.librdkafka.probe")
_QUIET_LOGGER.setLevel(logging.CRITICAL + 1)

#: Under ``group.protocol=consumer`` (KIP-848) the broker owns these (its
#: ``group.consumer.session.timeout.ms``, ``group.consumer.heartbeat.interval.ms`` and
#: ``group.consumer.assignors``); librdkafka refuses to create a consumer that sets them.
CLASSIC_ONLY: frozenset[str] = frozenset(
    {"session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"}
)


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The pipeline consumer's librdkafka properties for ``settings.group_protocol``."""
    overrides: dict[str, Any] = dict(CONSUMER_DEFAULTS)
    overrides["group.id"] = settings.group_id
    overrides["group.protocol"] = settings.group_protocol
    if settings.group_instance_id:
        overrides["group.instance.id"] = settings.group_instance_id
    base = settings.kafka_client_config()
    overrides.update({k: v for k, v in base.items() if k in CONSUMER_DEFAULTS})
    # Offsets out of range are reset by librdkafka silently: report each one.
    overrides["logger"] = OffsetResetWatch(str(overrides["auto.offset.reset"]))
    conf = client_config(base, **overrides)
    if settings.group_protocol == "consumer":
        for key in CLASSIC_ONLY:
            conf.pop(key, None)
    return conf


def build_consumer(settings: Settings) -> Consumer:
    return Consumer(consumer_config(settings))


#: How often a worker fenced by its own ``group.instance.id`` tries again (KIP-848).
INSTANCE_RETRY_SECONDS = 2.0


def wait_for_instance_id(
    settings: Settings, *, sleep: Any = time.sleep, retry_s: float = INSTANCE_RETRY_SECONDS
) -> float:
    """Under KIP-848, wait until no other member holds our ``group.instance.id``; seconds waited.

    A static member that was SIGKILLed stays in the group until the broker's
    ``group.consumer.session.timeout.ms`` (45 s by default) expires, and the broker
    fences the *new* member that joins with the same instance id meanwhile (a fatal
    UNRELEASED_INSTANCE_ID error; the classic protocol lets the new one take over at
    once). So before the pipeline consumer joins, a probe consumer joins, and if it is
    fenced the worker tries again every ``retry_s`` instead of crashing. A probe that
    is not fenced leaves as a static member does: its assignment stays reserved for the
    instance id and the pipeline consumer that joins next gets it back.
    """
    if settings.group_protocol != "consumer" or not settings.group_instance_id:
        return 0.0
    started = time.monotonic()
    warned_at: float | None = None
    while True:
        conf = consumer_config(settings)
        conf["logger"] = _QUIET_LOGGER  # the fenced probe logs a FATAL line per attempt
        probe = Consumer(conf)
        assigned: list[int] = []

        def on_assign(_c: Consumer, ps: list[Any], seen: list[int] = assigned) -> None:
            seen.append(len(ps))

        probe.subscribe([settings.topics.input], on_assign=on_assign)
        fenced = None
        deadline = time.monotonic() + 15.0
        try:
            while not assigned and time.monotonic() < deadline:
                m = probe.poll(0.1)
                err = None if m is None else m.error()
                # The fatal error arrives as an event whose code is _FATAL (fatal() is False
                # on it); its text names the underlying error.
                if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
                    if "instance" not in err.str().lower():
                        raise StreamError(f"consumer failed: {err.str()}")
                    fenced = err.str()
                    break
        finally:
            with contextlib.suppress(Exception):
                probe.close()
        if fenced is None:
            waited = time.monotonic() - started
            if warned_at is not None:
                log.info(
                    "group.instance.id %s is ours again after %.1fs",
                    conf["group.instance.id"],
                    waited,
                )
            return waited
        now = time.monotonic()
        if warned_at is None or now - warned_at > 30:
            warned_at = now
            log.warning(
                "group.instance.id %s is still held by another member (a killed worker stays "
                "until the broker's group.consumer.session.timeout.ms; KIP-848 fences the new "
                "member meanwhile): retrying every %.0fs",
                conf["group.instance.id"],
                retry_s,
            )
        sleep(retry_s)


class PipelineService(mode.Service):
    """Owns the Kafka clients and the runner; feeds batches to the agent."""

    def __init__(self, settings: Settings, channel: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.channel = channel
        self.runner: BatchRunner | None = None
        self.feeds = TableFeeds()
        self._lookups: dict[str, Any] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self.ready = False
        #: Serialises every use of the runner (fetch, process, tick). A checkpoint waits
        #: for broker acknowledgements for up to seconds when the broker is slow; it runs
        #: in a thread under this lock, so nothing else touches the clients meanwhile,
        #: while the event loop keeps answering /health and /metrics (liveness probes).
        self._runner_lock = asyncio.Lock()
        #: The checkpoint running in a thread, if any: a cancelled caller cannot stop
        #: the thread, so shutdown waits for it before its own final checkpoint.
        self._checkpointing: asyncio.Future[None] | None = None
        #: Set by on_stop once the runner (and its consumer) is closed.
        self._closed = False
        #: Links running now, for /health (a stage blocking its thread).
        self.liveness = Liveness()
        self._stall_logged: str | None = None
        #: Set in on_start: enrich has a lookup outside the process (run it in a thread).
        self._enrich_may_block = True
        #: Batches fetched and not yet through the chain (``stream_batches_in_flight``).
        #: Bounded so that memory is at most this many batches and, when the chain is
        #: busy, records wait in librdkafka's queue (the next batch is bigger) rather
        #: than in a queue of small batches inside the chain.
        self._slots = asyncio.Semaphore(settings.max_inflight_batches)
        #: Stacks of every thread in the log if the poll loop is silent 4x the stall limit.
        self._watchdog = StackWatchdog(STACK_DUMP_FACTOR * settings.stall_timeout)

    async def on_start(self) -> None:
        s = self.settings
        base = s.kafka_client_config()
        self._lookups, self._breakers = build_lookups(s, self.feeds, base)
        # Only lookups outside the process (HTTP, PostgreSQL: the ones with a breaker) can
        # block enrich. Over in-memory tables it runs on the loop: the GIL serialises it
        # anyway, and the two threads handing the GIL back and forth cost latency.
        self._enrich_may_block = bool(self._breakers)
        registry_in_use = uses_registry(s)
        if registry_in_use:
            from stream.formats import pipeline as formats

            registry = formats.registry_breaker(s)
            if registry is not None:  # the runner resumes a paused decode when it is not open
                self._breakers[formats.REGISTRY_BREAKER] = registry
        # Output schemas are checked for compatibility while the stages are built (a
        # ConfigError with the registry's message) and registered here, once.
        stages = build_stages(s, self._lookups, self._breakers)
        if registry_in_use:
            formats.register_outputs(stages.encoder)
        transactional_id = None
        if s.processing_guarantee == "exactly_once":
            # Stable across restarts of one instance (static membership, or a pod's
            # hostname with pid 1), so a restarted worker fences its own zombie.
            instance = s.group_instance_id or f"{socket.gethostname()}-{os.getpid()}"
            transactional_id = f"{s.group_id}-{instance}"
        producer = OutputProducer(base, transactional_id=transactional_id)
        await asyncio.to_thread(wait_for_instance_id, s)
        self.runner = BatchRunner(
            s,
            consumer=build_consumer(s),
            producer=producer,
            stages=stages,
            read_changelog=self._changelog_reader(base, producer),
            tracer=(
                BatchTracer(
                    topic=s.topics.input, group=s.group_id, sample_ratio=s.tracing_sample_ratio
                )
                if s.tracing
                else None
            ),
            lookup_breakers=list(self._breakers.values()),
            user_steps=stages.user_steps,
        )
        self.runner.start()
        log.info("agent chain: %s", " -> ".join(self.runner.describe()))
        gcpause.install()
        gcpause.freeze_startup_objects()
        self.ready = True
        metrics.worker_ready.set(1)

    def _changelog_reader(self, base: dict[str, str], producer: OutputProducer) -> Any:
        """Reads a changelog partition whole; first adds it if the input has grown
        (partitions added while running) and tells the producer it is there."""
        topic = self.settings.changelog_topic
        known = [0]  # partitions the changelog is known to have

        def read(partition: int) -> list[tuple[bytes, bytes | None]]:
            if partition >= known[0]:
                known[0] = ensure_partitions(base, topic, partition + 1)
                producer.refresh_metadata(topic)
            entries: list[tuple[bytes, bytes | None]] = []
            for batch in read_partition_to_end(base, topic, partition):
                entries.extend((m.key() or b"", m.value()) for m in batch)
            return entries

        return read

    @mode.Service.task
    async def _fetch_loop(self) -> None:
        while not self.should_stop:
            runner = self.runner
            if runner is None:
                await asyncio.sleep(0.05)
                continue
            await self._slots.acquire()
            try:
                async with self._runner_lock:
                    if self._closed:
                        return
                    # In a thread: the rebalance callbacks run inside consume(), and a
                    # restore of window state can take long; /health keeps answering.
                    batch = await asyncio.to_thread(runner.fetch)
                    self._watchdog.rearm()
                    work = runner.begin(batch) if batch is not None else None
            except Exception as exc:
                await self._fail(exc, "consumer failed")
                return
            metrics.last_poll_timestamp_seconds.set(runner.last_poll)
            if work is None:
                self._slots.release()
                await asyncio.sleep(0.005)
                continue
            metrics.batches_in_flight.inc()
            await self.channel.send(value=work)

    def leave_chain(self) -> None:
        """A batch is through the chain (finished, or dropped by a link): fetch another."""
        metrics.batches_in_flight.dec()
        self._slots.release()

    @mode.Service.timer(1.0)
    async def _tick(self) -> None:
        runner = self.runner
        if runner is None or not self.ready:
            return
        try:
            async with self._runner_lock:  # the enrich link may be reading the tables in a thread
                self.feeds.poll()
                runner.tick(checkpoint=False)
                await self._checkpoint_if_due(runner)
        except Exception as exc:
            await self._fail(exc, "worker failed")

    async def step(self, index: int, work: WorkBatch) -> bool:
        """Run link ``index`` of the chain on ``work``; True when it goes on to the next.

        Plain links run under the runner lock. An async user stage awaits its service
        without it (the rest of the chain, the fetch loop and the rebalance callbacks go
        on meanwhile); the batch it holds is checked for revoked partitions after.
        """
        runner = self.runner
        if runner is None or not self.ready:
            return False  # shutting down: unprocessed batches are replayed from the last commit
        step = runner.steps[index]
        try:
            if isinstance(step, UserStep) and step.is_async:
                if not await self._run_async(runner, step, work):
                    return False
            elif isinstance(step, UserStep) or (step.name == ENRICH and self._enrich_may_block):
                # May block (a user's function, a lookup): in a thread, watched by /health.
                async with self._runner_lock:
                    with self.liveness.busy(step.name):
                        if not await asyncio.to_thread(runner.run_step, step, work):
                            return False
            else:
                async with self._runner_lock:
                    if not runner.run_step(step, work):
                        return False
            if index == len(runner.steps) - 1:
                async with self._runner_lock:
                    runner.finish(work)
                    await self._checkpoint_if_due(runner)
        except Exception as exc:
            # Never skip a batch: stop committing and crash the worker; the group
            # replays everything after the last checkpoint on a healthy member.
            await self._fail(exc, "batch processing failed")
            return False
        return True

    async def _run_async(self, runner: BatchRunner, step: UserStep, work: WorkBatch) -> bool:
        async with self._runner_lock:
            if not runner.enter(work):
                return False
        start = time.perf_counter()
        try:
            await step.run_async(work)
        except DependencyUnavailable as exc:
            async with self._runner_lock:
                runner.dependency_down(work, exc)
            return False
        async with self._runner_lock:
            runner.step_done(step.name, work, time.perf_counter() - start)
        return True

    async def _checkpoint_if_due(self, runner: BatchRunner) -> None:
        """Checkpoint off the event loop (caller holds the runner lock)."""
        if runner.checkpoint_due():
            self._checkpointing = asyncio.ensure_future(asyncio.to_thread(runner.maybe_checkpoint))
            await asyncio.shield(self._checkpointing)

    async def _fail(self, exc: BaseException, what: str) -> None:
        """Stop the worker (non-zero exit) without committing anything more."""
        self.ready = False
        metrics.worker_ready.set(0)
        metrics.errors_total.labels(stage="runner", error_class=type(exc).__name__).inc()
        if isinstance(exc, StreamError):
            log.error("%s: %s; stopping the worker without committing", what, exc)
        else:
            log.exception("%s; stopping the worker without committing", what)
        await self.crash(exc)

    async def on_stop(self) -> None:
        self._watchdog.cancel()
        self.ready = False
        metrics.worker_ready.set(0)
        if self._checkpointing is not None and not self._checkpointing.done():
            with contextlib.suppress(Exception):  # its failure already poisoned the runner
                await self._checkpointing
        committed = False
        if self.runner is not None:
            # Under the lock: a fetch running in its thread must not find the consumer
            # closed under it (it failed the worker's exit code at SIGTERM); once closed,
            # the fetch loop stops fetching.
            async with self._runner_lock:
                self._closed = True
                # Leave a few seconds of the grace period for leaving the group and exiting.
                committed = self.runner.close(wait=max(self.settings.shutdown_grace - 5.0, 1.0))
        for lookup in self._lookups.values():
            close = getattr(lookup, "close", None)
            if close is not None:
                close()
        self.feeds.close()
        log.info(
            "pipeline stopped: %s, left the consumer group",
            "everything processed is committed" if committed else "no final commit",
        )

    def healthy(self) -> bool:
        return self.stall() is None

    def stall(self) -> Stall | None:
        """What stalls the worker: a link running for longer than ``stall_timeout``
        (a stage blocking its thread), or the poll loop silent for that long."""
        runner = self.runner
        if runner is None:
            return Stall("start-up", 0.0)
        limit = self.settings.stall_timeout
        blocked = self.liveness.stalled(limit)
        if blocked is not None:
            if blocked.stage != self._stall_logged:
                self._stall_logged = blocked.stage
                log.error(
                    "stage %s has not returned for %.0fs: /health reports it stalled (the "
                    "liveness probe restarts the worker; uncommitted records are replayed)",
                    blocked.stage,
                    blocked.seconds,
                )
            return blocked
        self._stall_logged = None
        silent = time.time() - runner.last_poll
        return Stall("fetch", silent) if silent >= limit else None


def chain_names(settings: Settings) -> list[str]:
    """The links of the chain, as :class:`~stream.runner.BatchRunner` builds them."""
    after: dict[str, list[str]] = {"validate": [], "enrich": []}
    for spec in settings.stages:
        after[spec.after].append(spec.stage_name)
    return ["validate", *after["validate"], "enrich", *after["enrich"], "correlate"]


def _link_agent(service: PipelineService, index: int, outbox: Any) -> Any:
    """The agent function of link ``index``: run it on each batch, pass the batch on."""

    async def link(stream: Any) -> None:
        async for work in stream:
            if await service.step(index, work) and outbox is not None:
                await outbox.send(value=work)
            else:
                service.leave_chain()

    link.__name__ = f"link_{index}"
    return link


class WebAndAgentsOnly(BootStrategy):
    """Start Faust's web server, agents and services, but no Faust Kafka client."""

    enable_kafka = False


def create_app(settings: Settings) -> tuple[faust.App, PipelineService]:
    """Build the Faust app with its pipeline service, batch agent and web views."""
    home = os.environ.get("STREAM_HOME", ".stream")
    os.makedirs(home, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",  # required by Faust; never connected
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_enabled=True,
        autodiscover=False,
        datadir=os.path.join(home, f"faust-{settings.app_id}"),
    )
    app.boot_strategy = WebAndAgentsOnly(app)
    # Faust starts with flow control suspended and resumes it after its consumer's first
    # rebalance; without that consumer the channel would never accept a batch.
    app.flow_control.resume()

    # One agent per link of the chain, joined by channels of batches (concurrency 1:
    # batches stay in order). The fetch loop bounds the batches in the whole chain.
    names = chain_names(settings)
    channels = [app.channel(maxsize=settings.max_inflight_batches)]
    channels += [app.channel(maxsize=1) for _ in names[1:]]
    service = PipelineService(settings, channels[0], loop=None)
    app.service(service)  # type: ignore[arg-type]  # Faust accepts instances too
    for index, name in enumerate(names):
        outbox = channels[index + 1] if index + 1 < len(names) else None
        app.agent(channels[index], name=f"stage-{name}", concurrency=1)(
            _link_agent(service, index, outbox)
        )

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
        return web.bytes(
            generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4"
        )

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        stall = service.stall()
        if stall is None:
            return web.json({"status": "ok"})
        body = {"status": "stalled", "stage": stall.stage, "seconds": round(stall.seconds, 1)}
        return web.json(body, status=503)

    @app.page("/ready")
    async def ready_view(web: Any, request: Any) -> Any:
        runner = service.runner
        ok = service.ready and service.healthy()
        body = {
            "ready": ok,
            "assigned_partitions": runner.assigned_partitions if runner else [],
            "pipeline": service.settings.pipeline,
            "agents": runner.describe() if runner else chain_names(service.settings),
            "reference_values": len(service.feeds),
        }
        return web.json(body, status=200 if ok else 503)

    return app, service
