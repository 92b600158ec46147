"""Run the whole benchmark: broker, input, every selected row, the document.

Order of events::

    broker (STREAM_BOOTSTRAP_SERVERS or a private local one)
    input topic <run>.events: --events generated records, --partitions partitions,
        plus the reference topic (and the same data as JSON for the peers)
    for each workload (--workload: observability, then orders):
    for each row: fresh output topics and consumer group on the SAME input topic
        throughput: start, watch to the end, check outputs against the ground truth
        (kstreams: once with 1 and once with 2 stream threads, the better one reported)
        latency (stream, and peers that sustain the rate): fresh input topic,
            warm-up, offered load, match outputs to inputs
    delete the run's topics; write benchmarks/results/bench-<UTC>.json
    (and, when latency was measured, bench-<UTC>-latency.png: ``latency_plot``)

``--format avro`` adds the ``stream-avro`` row after ``stream`` (``benchmarks.harness.formats``):
the same events framed as Avro on an input topic of their own, a schema registry for the
run (``$STREAM_SCHEMA_REGISTRY_URL`` or a local one), the same output checks.

The orders workload (``benchmarks.harness.orders``) has its own input topic, customer
table topic, an HTTP exchange-rate service served by this process and the orders
pipeline file written per row; only the product's rows run it (ceiling, stream,
stream-eos): the peers implement the observability pipeline only.

Before the broker starts, every selected peer's environment is prepared
(``benchmarks.peers.envs``: a virtual environment per Python peer, the Kafka
Streams jar built with Maven), once per machine; a peer whose prerequisites are
missing is a ``skipped`` row, one whose build failed a ``FAILED`` row.

Rows run one after another, never concurrently: the machine is the thing being
measured. Every row has a deadline; a system past it is killed and the row
marked TIMEOUT, and the run goes on with the next row.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from benchmarks.harness import report
from benchmarks.harness.broker import BrokerInfo, broker_session
from benchmarks.harness.cluster import COMPACTED, Cluster, TopicSet
from benchmarks.harness.console import Console
from benchmarks.harness.formats import FORMAT_ROWS, registry_session, write_format_pipeline
from benchmarks.harness.latency import WARMUP, measure_latency, planned_events
from benchmarks.harness.load import average_record_bytes, produce
from benchmarks.harness.orders import (
    FxService,
    check_orders,
    fx_service,
    produce_orders,
    seed_customers,
    write_pipeline,
)
from benchmarks.harness.rows import (
    CEILING,
    FAILED,
    KSTREAMS,
    LATENCY_ROWS,
    OBSERVABILITY,
    ORDERS,
    ORDERS_ROWS,
    PEER_ROWS,
    ROW_NAMES,
    SKIPPED,
    STREAM,
    STREAM_EOS,
    STREAM_X2,
    TIMEOUT,
    WORKER_ROWS,
    WORKLOADS,
    Row,
    row_label,
)
from benchmarks.harness.systems import (
    REPO,
    ProgramSystem,
    System,
    WorkerGroup,
    kstreams_args,
    peer_args,
    python_module,
)
from benchmarks.harness.throughput import run_throughput
from benchmarks.harness.verify import GroundTruth, check_copy, check_pipeline
from benchmarks.peers import envs
from stream.errors import BrokerUnavailableError, ConfigError, TransientError
from stream.kafka.admin import TopicSpec
from stream.loadgen.broker import check_broker, seed_reference_data
from stream.loadgen.reference import reference_data

DEFAULT_RESULTS_DIR: Final = REPO / "benchmarks" / "results"
#: A peer's latency is measured only if its throughput was at least this multiple of the rate.
SUSTAIN_MARGIN: Final = 1.2
SOURCES: Final = 50
#: Stream threads the Kafka Streams row is run with; the better one is reported.
KSTREAMS_THREADS: Final = (1, 2)
#: The Kafka Streams JIT warm-up pass reads at most this many records of the input: enough
#: for the JIT to compile the hot path, without doubling a 1M-event row.
KSTREAMS_WARMUP_MAX: Final = 200_000


@dataclass(frozen=True)
class BenchOptions:
    events: int = 1_000_000
    partitions: int = 8
    latency_rate: float = 50_000.0
    latency_seconds: float = 20.0
    rows: tuple[str, ...] = ROW_NAMES
    latency_rows: tuple[str, ...] = LATENCY_ROWS
    #: Seconds per row phase (throughput, then latency) before the system is killed
    #: (a system without progress for ``throughput.STALL_S`` is killed sooner).
    timeout: float = 1800.0
    bootstrap: str | None = None
    results_dir: Path = DEFAULT_RESULTS_DIR
    seed: int = 42
    invalid_ratio: float = 0.02
    keep_topics: bool = False
    #: The command line as typed, recorded in the document.
    command: str = ""
    #: Workloads, in run order: ``observability`` (every row) and/or ``orders``.
    workloads: tuple[str, ...] = (OBSERVABILITY,)
    #: ``STREAM_COMMIT_INTERVAL`` of the ``stream-eos`` row (None: the worker's default):
    #: each exactly-once checkpoint commits one transaction.
    eos_commit_interval: float | None = None
    #: Draw the latency timeline PNG next to the JSON (matplotlib, in a bench-only venv).
    plot: bool = True
    #: Input formats measured beside JSON (``--format avro``: the ``stream-avro`` row).
    formats: tuple[str, ...] = ()

    def check(self) -> None:
        if self.events < 1:
            raise ConfigError("--events", "must be at least 1")
        if self.partitions < 1:
            raise ConfigError("--partitions", "must be at least 1")
        if self.latency_rate < 0 or self.latency_seconds < 0:
            raise ConfigError("--latency-rate/--latency-seconds", "must not be negative")
        if self.timeout <= 0:
            raise ConfigError("--timeout", "must be positive")
        if not self.rows:
            raise ConfigError("--only/--skip", "no row left to run")
        if not 0 <= self.invalid_ratio < 1:
            raise ConfigError("--invalid-ratio", "must be in [0, 1)")
        unknown = set(self.workloads) - set(WORKLOADS)
        if unknown or not self.workloads:
            raise ConfigError(
                "--workload",
                f"unknown workload {', '.join(sorted(unknown)) or '(none)'}; "
                f"workloads: {', '.join(WORKLOADS)}",
            )
        if self.eos_commit_interval is not None and self.eos_commit_interval <= 0:
            raise ConfigError("--eos-commit-interval", "must be positive")
        unknown_formats = set(self.formats) - set(FORMAT_ROWS)
        if unknown_formats:
            raise ConfigError(
                "--format",
                f"unknown format {', '.join(sorted(unknown_formats))}; "
                f"formats: {', '.join(FORMAT_ROWS)} (json is always measured: the stream row)",
            )
        if self.formats and OBSERVABILITY not in self.workloads:
            raise ConfigError("--format", "the format rows run on the observability workload")

    @property
    def measures_latency(self) -> bool:
        return self.latency_rate > 0 and self.latency_seconds > 0


def select_workloads(text: str | None) -> tuple[str, ...]:
    """``--workload``: ``observability``, ``orders``, or both (comma-separated, or ``all``)."""
    if not text:
        return (OBSERVABILITY,)
    chosen = {n.strip() for n in text.split(",") if n.strip()}
    if chosen == {"all"}:
        return WORKLOADS
    unknown = chosen - set(WORKLOADS)
    if unknown:
        raise ConfigError(
            "--workload",
            f"unknown workload {', '.join(sorted(unknown))}; "
            f"workloads: {', '.join(WORKLOADS)}, all",
        )
    return tuple(w for w in WORKLOADS if w in chosen)


def rows_of(workload: str, rows: tuple[str, ...], formats: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The selected rows that run on ``workload``; on observability, each ``--format``
    row right after ``stream`` (or last, without it)."""
    if workload != OBSERVABILITY:
        return tuple(r for r in rows if r in ORDERS_ROWS)
    extra = [FORMAT_ROWS[f] for f in formats]
    if not extra:
        return rows
    at = rows.index(STREAM) + 1 if STREAM in rows else len(rows)
    return (*rows[:at], *extra, *rows[at:])


def select_rows(only: str | None, skip: str | None) -> tuple[str, ...]:
    """Rows named by ``--only`` (default all) minus ``--skip``, in run order."""

    def names(text: str | None, flag: str) -> set[str]:
        chosen = {n.strip() for n in (text or "").split(",") if n.strip()}
        unknown = chosen - set(ROW_NAMES)
        if unknown:
            raise ConfigError(
                flag, f"unknown row {', '.join(sorted(unknown))}; rows: {', '.join(ROW_NAMES)}"
            )
        return chosen

    wanted = names(only, "--only") or set(ROW_NAMES)
    wanted -= names(skip, "--skip")
    return tuple(n for n in ROW_NAMES if n in wanted)


@dataclass
class Run:
    """Shared state of one benchmark run."""

    options: BenchOptions
    broker: BrokerInfo
    cluster: Cluster
    console: Console
    run_dir: Path
    run_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    truth: GroundTruth = field(default_factory=lambda: GroundTruth(0, 0))
    input_topic: str = ""
    reference_topic: str = ""
    reference_json: Path = Path()
    #: Each selected peer's environment, or why it cannot run.
    peers: dict[str, envs.PeerEnv | envs.PeerUnavailable] = field(default_factory=dict)
    #: The workload whose rows run now, and (orders) its exchange-rate service.
    workload: str = OBSERVABILITY
    fx: FxService | None = None
    #: ``--format`` rows: the registry, and each row's own input topic and ground truth.
    registry_url: str | None = None
    format_inputs: dict[str, str] = field(default_factory=dict)
    format_truths: dict[str, GroundTruth] = field(default_factory=dict)

    def slug(self, name: str) -> str:
        """``name`` in topic names and file names: ``orders-stream`` for the orders row."""
        return name if self.workload == OBSERVABILITY else f"{self.workload}-{name}"

    def topics(self, name: str, input_topic: str | None = None) -> TopicSet:
        return TopicSet(
            prefix=f"{self.run_id}.{self.slug(name)}",
            input=input_topic or self.format_inputs.get(name) or self.input_topic,
            reference=self.reference_topic,
            partitions=self.options.partitions,
        )


@dataclass(frozen=True)
class BenchResult:
    document: dict[str, Any]
    #: Where the document was written.
    path: Path
    rows: list[Row]
    #: Run-level remarks (rows a workload does not run).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.document["ok"])


def run_bench(options: BenchOptions, console: Console) -> BenchResult:
    """Run every selected row; the document is also written to ``options.results_dir``."""
    options.check()
    started = datetime.now(UTC)
    load_before = report.load_average()
    run_dir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    peers = prepare_peers(options.rows, console)
    plan = [
        (w, name) for w in options.workloads for name in rows_of(w, options.rows, options.formats)
    ]
    notes: list[str] = []
    if ORDERS in options.workloads:
        left_out = [r for r in options.rows if r not in ORDERS_ROWS]
        if left_out:
            notes.append(
                f"orders workload: {', '.join(left_out)} not run (the peers and stream-x2 "
                "implement/measure the observability pipeline only)"
            )
    inputs: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    registry = registry_session(run_dir) if options.formats else nullcontext(None)
    with broker_session(options.bootstrap, console.stream) as broker, registry as registry_url:
        check_broker(broker.bootstrap, timeout=10.0)
        cluster = Cluster(broker.bootstrap)
        run = Run(options, broker, cluster, console, run_dir, peers=peers)
        run.registry_url = registry_url
        try:
            for workload in options.workloads:
                run.workload = workload
                names = rows_of(workload, options.rows, options.formats)
                if not names:
                    continue
                if workload == OBSERVABILITY:
                    inputs[workload] = prepare_input(run)
                    for fmt in options.formats:
                        inputs[fmt] = prepare_format_input(run, fmt)
                    rows += [
                        run_row(run, n, plan.index((workload, n)) + 1, len(plan)) for n in names
                    ]
                    continue
                with fx_service() as run.fx:
                    inputs[workload] = prepare_orders_input(run)
                    rows += [
                        run_row(run, n, plan.index((workload, n)) + 1, len(plan)) for n in names
                    ]
                    inputs[workload]["fx_requests"] = dict(run.fx.asked)
                run.fx = None
        finally:
            if not options.keep_topics:
                cluster.delete_matching(run.run_id)
            cluster.close()
    failed = [r for r in rows if r.status in (FAILED, TIMEOUT)]
    if failed:
        console.say(f"logs of this run kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    document = {
        "schema": report.SCHEMA_VERSION,
        "command": options.command,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report.machine_info(broker.kafka_version, broker.bootstrap, broker.private),
        "load_average": {"before": load_before, "after": report.load_average()},
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(options).items()
            if k not in ("command", "bootstrap", "results_dir")
        },
        "input": next(iter(inputs.values()), {}),
        "inputs": inputs,
        "rows": [r.as_dict() for r in rows],
        "comparisons": report.comparisons(rows),
        "notes": notes,
        "ok": not failed,
        "logs": str(run_dir) if failed else None,
    }
    path = report.write_document(document, options.results_dir, started)
    if options.plot and any(r.latency is not None and r.latency.timeline for r in rows):
        from benchmarks.harness.plot import write_latency_plot

        picture = write_latency_plot(path, console)
        if picture is not None:
            document["latency_plot"] = str(picture)
            path.write_text(json.dumps(document, indent=2) + "\n")
    return BenchResult(document, path, rows, notes)


def prepare_peers(
    rows: tuple[str, ...], console: Console
) -> dict[str, envs.PeerEnv | envs.PeerUnavailable]:
    """Build (or find cached) the environment of every selected peer row."""
    prepared: dict[str, envs.PeerEnv | envs.PeerUnavailable] = {}
    for name in rows:
        if name not in PEER_ROWS:
            continue
        try:
            env = envs.prepare(name, say=console.say)
        except envs.PeerUnavailable as exc:
            console.say(f"{name}: {exc}")
            prepared[name] = exc
            continue
        if env.built_seconds is not None:
            console.say(f"{name}: environment built in {env.built_seconds:.1f}s")
        prepared[name] = env
    return prepared


def prepare_input(run: Run) -> dict[str, Any]:
    """Create and fill the shared input topic and the reference data."""
    o, cluster = run.options, run.cluster
    run.input_topic = f"{run.run_id}.events"
    run.reference_topic = f"{run.run_id}.reference"
    cluster.create(
        [TopicSpec(run.input_topic, o.partitions), TopicSpec(run.reference_topic, 1, COMPACTED)]
    )
    seed_reference_data(cluster.bootstrap, run.reference_topic, SOURCES)
    run.reference_json = run.run_dir / "reference.json"
    run.reference_json.write_text(json.dumps(reference_data(SOURCES)))
    run.console.say(
        f"producing {o.events:,} events to {run.input_topic} ({o.partitions} partitions)"
    )
    loaded = produce(
        cluster.bootstrap,
        run.input_topic,
        o.events,
        seed=o.seed,
        invalid_ratio=o.invalid_ratio,
        progress=None if run.console.quiet else run.console.stream,
    )
    if not loaded.ok or loaded.acknowledged != o.events:
        raise BrokerUnavailableError(
            f"producing the input failed: {loaded.first_error or 'not every record acknowledged'}"
        )
    run.truth = GroundTruth(events=o.events, invalid=loaded.invalid)
    return {
        "topic": run.input_topic,
        "events": o.events,
        "valid": run.truth.valid,
        "invalid": run.truth.invalid,
        "partitions": o.partitions,
        "avg_record_bytes": round(average_record_bytes(o.seed, o.invalid_ratio)),
        "produced_events_per_s": round(loaded.events_per_s),
    }


def prepare_format_input(run: Run, fmt: str) -> dict[str, Any]:
    """The run's events again, framed as ``fmt`` (same seed: same events, same truth)."""
    o, cluster = run.options, run.cluster
    assert run.registry_url is not None, "format rows run inside the registry session"
    row = FORMAT_ROWS[fmt]
    topic = f"{run.run_id}.events-{fmt}"
    cluster.create([TopicSpec(topic, o.partitions)])
    run.console.say(f"producing {o.events:,} {fmt} events to {topic}")
    loaded = produce(
        cluster.bootstrap,
        topic,
        o.events,
        seed=o.seed,
        invalid_ratio=o.invalid_ratio,
        fmt=fmt,
        registry_url=run.registry_url,
    )
    if not loaded.ok or loaded.acknowledged != o.events:
        raise BrokerUnavailableError(
            f"producing the {fmt} input failed: "
            f"{loaded.first_error or 'not every record acknowledged'}"
        )
    run.format_inputs[row] = topic
    run.format_truths[row] = GroundTruth(events=o.events, invalid=loaded.invalid)
    return {
        "format": fmt,
        "topic": topic,
        "events": o.events,
        "valid": o.events - loaded.invalid,
        "invalid": loaded.invalid,
        "partitions": o.partitions,
        "registry_url": run.registry_url,
        "produced_events_per_s": round(loaded.events_per_s),
    }


def prepare_orders_input(run: Run) -> dict[str, Any]:
    """The orders input topic, the customer table topic (seeded) and the orders."""
    o, cluster = run.options, run.cluster
    run.input_topic = f"{run.run_id}.orders"
    run.reference_topic = f"{run.run_id}.customers"
    cluster.create(
        [TopicSpec(run.input_topic, o.partitions), TopicSpec(run.reference_topic, 1, COMPACTED)]
    )
    seed_customers(cluster.bootstrap, run.reference_topic)
    run.console.say(
        f"producing {o.events:,} orders to {run.input_topic} ({o.partitions} partitions)"
    )
    loaded = produce_orders(
        cluster.bootstrap, run.input_topic, o.events, seed=o.seed, invalid_ratio=o.invalid_ratio
    )
    run.truth = GroundTruth(events=o.events, invalid=loaded.invalid)
    return {
        "workload": ORDERS,
        "topic": run.input_topic,
        "events": o.events,
        "valid": run.truth.valid,
        "invalid": run.truth.invalid,
        "invalid_kinds": loaded.invalid_kinds,
        "partitions": o.partitions,
        "avg_record_bytes": round(loaded.avg_record_bytes),
        "produced_events_per_s": round(loaded.produced_events_per_s),
        "customers_topic": run.reference_topic,
        "fx_url": run.fx.url if run.fx else None,
    }


def run_row(run: Run, name: str, index: int, total: int | None = None) -> Row:
    o = run.options
    row_name = row_label(run.workload, name)
    label = f"[{index}/{total or len(o.rows)}] {row_name}"
    env = run.peers.get(name)
    if isinstance(env, envs.PeerUnavailable):
        row = Row(row_name, events=o.events, workload=run.workload)
        row.fail(SKIPPED if env.missing else FAILED, str(env))
        run.console.say(f"{label}: {row.status}")
        return row
    run.console.say(f"{label}: starting")
    if name == KSTREAMS:
        row = best_of_threads(run, name, label)
    else:
        row = measure_throughput(run, name, name)
    row.clients = env.clients if env is not None else envs.product_clients()
    if row.ok:
        run.console.say(
            f"{label}: {row.events_per_s:,.0f} events/s, "
            f"{row.cpu_seconds_per_million:,.1f} CPU s/M, outputs correct"
        )
    else:
        run.console.say(f"{label}: {row.status}: {'; '.join(row.notes)}")
    if name == STREAM_EOS:
        row.detail["processing_guarantee"] = "exactly_once"
        row.detail["commit_interval_s"] = o.eos_commit_interval or _default_commit_interval()
    if name in FORMAT_ROWS.values():
        row.latency_note = "not measured: the format rows measure throughput and CPU only"
    elif name in o.latency_rows and name in LATENCY_ROWS:
        if run.workload != OBSERVABILITY:
            row.latency_note = "not measured: latency runs use the observability workload"
        else:
            run_latency(run, row)
    return row


def _default_commit_interval() -> float:
    from stream.config import Settings

    return float(Settings.model_fields["commit_interval"].default)


def measure_throughput(run: Run, name: str, topics_name: str, threads: int = 1) -> Row:
    """One throughput measurement of system ``name`` on fresh output topics."""
    o = run.options
    row = Row(row_label(run.workload, name), events=o.events, workload=run.workload)
    row.detail["load_average"] = {"start": report.load_average()}
    topics = run.topics(topics_name)
    run.cluster.create(topics.output_specs())
    system = make_system(run, name, topics, o.events, o.timeout, threads=threads)
    with _running(system):
        run_throughput(
            row,
            system,
            time.monotonic() + o.timeout,
            run.console,
            check=_checker(run, name, topics),
        )
    row.detail["load_average"]["end"] = report.load_average()
    return row


def best_of_threads(run: Run, name: str, label: str) -> Row:
    """Kafka Streams with 1 and with 2 stream threads (each after its own JIT warm-up
    pass, on its own topics and application ids); the faster correct one is the row,
    both are in its notes and ``detail.attempts``. Any incorrect attempt fails the row."""
    attempts: list[tuple[int, Row]] = []
    for threads in KSTREAMS_THREADS:
        attempt = measure_throughput(run, name, f"{name}-t{threads}", threads=threads)
        attempt.detail["threads"] = threads
        attempts.append((threads, attempt))
        figure = (
            f"{attempt.events_per_s:,.0f} events/s, {attempt.cpu_seconds_per_million:,.1f} "
            f"CPU s/M, {attempt.peak_rss_mb:,.0f} MB"
            if attempt.ok and attempt.events_per_s
            else f"{attempt.status}: {'; '.join(attempt.notes)}"
        )
        run.console.say(f"{label}: {threads} stream thread(s): {figure}")
    correct = [a for _, a in attempts if a.ok and a.events_per_s]
    row = max(correct, key=lambda a: a.events_per_s or 0.0) if correct else attempts[-1][1]
    row.detail["attempts"] = [
        {
            "threads": threads,
            "status": a.status,
            "events_per_s": None if a.events_per_s is None else round(a.events_per_s, 1),
            "cpu_seconds_per_million": (
                None if a.cpu_seconds_per_million is None else round(a.cpu_seconds_per_million, 2)
            ),
            "peak_rss_mb": None if a.peak_rss_mb is None else round(a.peak_rss_mb, 1),
            "warmup": a.detail.get("warmup"),
            "notes": list(a.notes),
        }
        for threads, a in attempts
    ]
    summary = "; ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: "
        + (
            f"{a.events_per_s:,.0f} events/s, {a.cpu_seconds_per_million:,.1f} CPU s/M, "
            f"{a.peak_rss_mb:,.0f} MB"
            if a.ok and a.events_per_s
            else a.status
        )
        for threads, a in attempts
    )
    row.notes.insert(0, f"best of {summary} (reported: {row.detail.get('threads')} thread(s))")
    for threads, a in attempts:
        if a is not row and not a.ok:
            row.fail(a.status, f"{threads} thread(s): {'; '.join(a.notes)}")
    return row


def make_system(
    run: Run,
    name: str,
    topics: TopicSet,
    expect: int,
    timeout: float,
    threads: int = 1,
    warmup_input: str | None = None,
) -> System:
    """The system of row ``name``; the Kafka Streams peer with ``threads`` stream threads,
    after a JIT warm-up pass over the first records of the run's input (``warmup_input``,
    default the row's own input; at most ``KSTREAMS_WARMUP_MAX``)."""
    cluster, run_dir = run.cluster, run.run_dir
    label = run.slug(name)
    if name == CEILING:
        args = [
            *("--bootstrap", cluster.bootstrap, "--input", topics.input),
            *("--output", topics.enriched, "--group", topics.group),
            *("--expect", str(expect), "--timeout", f"{timeout:g}"),
        ]
        return ProgramSystem(
            label,
            topics,
            cluster,
            run_dir,
            python_module("benchmarks.harness.ceiling"),
            args,
            output_topics=(topics.enriched,),
        )
    if name in WORKER_ROWS or name in FORMAT_ROWS.values():
        config = None
        if name in FORMAT_ROWS.values():
            assert run.registry_url is not None, "format rows run inside the registry session"
            fmt = next(f for f, row in FORMAT_ROWS.items() if row == name)
            config = write_format_pipeline(run_dir / f"{topics.prefix}.yaml", fmt, run.registry_url)
        elif run.workload == ORDERS:
            assert run.fx is not None, "the orders rows run inside the fx service"
            config = write_pipeline(
                run_dir / f"{topics.prefix}.yaml", topics, run.reference_topic, run.fx.url
            )
        settings: dict[str, str] = {}
        if name == STREAM_EOS:
            settings["STREAM_PROCESSING_GUARANTEE"] = "exactly_once"
            if run.options.eos_commit_interval is not None:
                settings["STREAM_COMMIT_INTERVAL"] = f"{run.options.eos_commit_interval:g}"
        return WorkerGroup(
            label,
            topics,
            cluster,
            run_dir,
            workers=2 if name == STREAM_X2 else 1,
            config=config,
            env=settings,
        )
    env = run.peers.get(name)
    if not isinstance(env, envs.PeerEnv):
        raise RuntimeError(f"{name}: no environment prepared")
    if name == KSTREAMS:
        args = kstreams_args(
            cluster.bootstrap,
            topics,
            expect,
            timeout,
            threads,
            min(run.options.events, KSTREAMS_WARMUP_MAX),
            warmup_input or topics.input,
            run_dir / f"{topics.prefix.rsplit('.', 1)[-1]}-state",
        )
    else:
        args = peer_args(cluster.bootstrap, topics, expect, run.reference_json, timeout)
    return ProgramSystem(name, topics, cluster, run_dir, env.command, args)


def _checker(run: Run, name: str, topics: TopicSet) -> Callable[[Row], None]:
    if name == CEILING:
        return lambda row: check_copy(row, run.cluster, topics.enriched, run.truth)
    truth, orders = run.format_truths.get(name, run.truth), run.workload == ORDERS

    def check(row: Row) -> None:
        check_pipeline(
            row,
            run.cluster,
            topics,
            truth,
            allow_replays=name == STREAM_X2,
            transactional=name == STREAM_EOS,
        )
        if orders and row.ok:
            check_orders(row, run.cluster, topics, truth.valid)

    return check


@contextmanager
def _running(system: System) -> Iterator[System]:
    """Never leave a system running, whatever happens (Ctrl-C included)."""
    try:
        yield system
    finally:
        system.kill()


def run_latency(run: Run, row: Row) -> None:
    o = run.options
    if not o.measures_latency:
        row.latency_note = "not measured (--latency-rate or --latency-seconds is 0)"
        return
    if row.name != STREAM:
        if not row.ok or row.events_per_s is None:
            row.latency_note = "not measured: no throughput figure from this run"
            return
        if row.events_per_s < SUSTAIN_MARGIN * o.latency_rate:
            row.latency_note = (
                f"not measured: cannot sustain {o.latency_rate:,.0f} events/s "
                f"(throughput {row.events_per_s:,.0f} events/s)"
            )
            return
    topics = run.topics(f"{row.name}-latency", input_topic=f"{run.run_id}.{row.name}-lat.events")
    run.cluster.create([TopicSpec(topics.input, o.partitions), *topics.output_specs()])
    expect = WARMUP + planned_events(o.latency_rate, o.latency_seconds)
    deadline = time.monotonic() + o.timeout
    run.console.say(f"{row.name}: latency run starting")
    # Kafka Streams: the thread count of its reported attempt, and its JIT warm-up pass
    # over the throughput input (this run's input starts empty)
    threads = int(row.detail.get("threads") or 1)
    system = make_system(
        run, row.name, topics, expect, o.timeout, threads=threads, warmup_input=run.input_topic
    )
    with _running(system) as system:
        try:
            latency, notes = measure_latency(
                system,
                run.cluster,
                topics,
                o.latency_rate,
                o.latency_seconds,
                o.seed,
                o.invalid_ratio,
                deadline,
                run.console,
                passthrough=row.name == CEILING,
                visibility=row.name == STREAM_EOS,
            )
        except (TimeoutError, RuntimeError, TransientError) as exc:
            row.latency_note = f"latency run failed: {exc}"
            run.console.say(f"{row.name}: {row.latency_note}")
            return
        finally:
            system.stop()
    row.latency = latency
    if notes:
        row.latency_note = "; ".join(notes)
    run.console.say(
        f"{row.name}: latency p50 {latency.p50_ms:,.1f} ms, p99 {latency.p99_ms:,.1f} ms "
        f"({latency.matched:,} matched)"
    )
