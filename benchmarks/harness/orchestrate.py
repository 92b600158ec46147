"""Run the whole benchmark: broker, input, every selected row, the document.

Order of events::

    broker (STREAM_BOOTSTRAP_SERVERS or a private local one)
    input topic <run>.events: --events generated records, --partitions partitions,
        plus the reference topic (and the same data as JSON for the peers)
    for each row: fresh output topics and consumer group on the SAME input topic
        throughput: start, watch to the end, check outputs against the ground truth
        latency (stream, and peers that sustain the rate): fresh input topic,
            warm-up, offered load, match outputs to inputs
    delete the run's topics; write benchmarks/results/bench-<UTC>.json

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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from benchmarks.harness import report
from benchmarks.harness.broker import BrokerInfo, broker_session
from benchmarks.harness.cluster import COMPACTED, Cluster, TopicSet
from benchmarks.harness.console import Console
from benchmarks.harness.latency import WARMUP, measure_latency, planned_events
from benchmarks.harness.load import average_record_bytes, produce
from benchmarks.harness.rows import (
    CEILING,
    FAILED,
    FAUST,
    LATENCY_ROWS,
    QUIX,
    ROW_NAMES,
    STREAM,
    STREAM_X2,
    TIMEOUT,
    Row,
)
from benchmarks.harness.systems import REPO, ProgramSystem, System, WorkerGroup, peer_args
from benchmarks.harness.throughput import run_throughput
from benchmarks.harness.verify import GroundTruth, check_copy, check_pipeline
from stream.errors import BrokerUnavailableError, ConfigError, TransientError
from stream.kafka.admin import TopicSpec
from stream.loadgen.broker import check_broker, seed_reference_data
from stream.loadgen.reference import reference_data

DEFAULT_RESULTS_DIR: Final = REPO / "benchmarks" / "results"
#: A peer's latency is measured only if its throughput was at least this multiple of the rate.
SUSTAIN_MARGIN: Final = 1.2
SOURCES: Final = 50
PEER_MODULES: Final = {
    QUIX: "benchmarks.peers.quix_pipeline",
    FAUST: "benchmarks.peers.faust_per_event",
}


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

    @property
    def measures_latency(self) -> bool:
        return self.latency_rate > 0 and self.latency_seconds > 0


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

    def topics(self, name: str, input_topic: str | None = None) -> TopicSet:
        return TopicSet(
            prefix=f"{self.run_id}.{name}",
            input=input_topic or self.input_topic,
            reference=self.reference_topic,
            partitions=self.options.partitions,
        )


@dataclass(frozen=True)
class BenchResult:
    document: dict[str, Any]
    #: Where the document was written.
    path: Path
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return bool(self.document["ok"])


def run_bench(options: BenchOptions, console: Console) -> BenchResult:
    """Run every selected row; the document is also written to ``options.results_dir``."""
    options.check()
    started = datetime.now(UTC)
    load_before = report.load_average()
    run_dir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    with broker_session(options.bootstrap, console.stream) as broker:
        check_broker(broker.bootstrap, timeout=10.0)
        cluster = Cluster(broker.bootstrap)
        run = Run(options, broker, cluster, console, run_dir)
        try:
            input_facts = prepare_input(run)
            rows = [run_row(run, name, i + 1) for i, name in enumerate(options.rows)]
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
        "input": input_facts,
        "rows": [r.as_dict() for r in rows],
        "ok": not failed,
        "logs": str(run_dir) if failed else None,
    }
    path = report.write_document(document, options.results_dir, started)
    return BenchResult(document, path, rows)


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


def run_row(run: Run, name: str, index: int) -> Row:
    o = run.options
    label = f"[{index}/{len(o.rows)}] {name}"
    run.console.say(f"{label}: starting")
    row = Row(name, events=o.events)
    row.detail["load_average"] = {"start": report.load_average()}
    topics = run.topics(name)
    run.cluster.create(topics.output_specs())
    with _running(make_system(run, name, topics, o.events, o.timeout)) as system:
        run_throughput(
            row,
            system,
            time.monotonic() + o.timeout,
            run.console,
            check=_checker(run, name, topics),
        )
    row.detail["load_average"]["end"] = report.load_average()
    if row.ok:
        run.console.say(
            f"{label}: {row.events_per_s:,.0f} events/s, "
            f"{row.cpu_seconds_per_million:,.1f} CPU s/M, outputs correct"
        )
    else:
        run.console.say(f"{label}: {row.status}: {'; '.join(row.notes)}")
    if name in o.latency_rows and name in LATENCY_ROWS:
        run_latency(run, row)
    return row


def make_system(run: Run, name: str, topics: TopicSet, expect: int, timeout: float) -> System:
    cluster, run_dir = run.cluster, run.run_dir
    if name == CEILING:
        args = [
            *("--bootstrap", cluster.bootstrap, "--input", topics.input),
            *("--output", topics.enriched, "--group", topics.group),
            *("--expect", str(expect), "--timeout", f"{timeout:g}"),
        ]
        return ProgramSystem(
            name,
            topics,
            cluster,
            run_dir,
            "benchmarks.harness.ceiling",
            args,
            output_topics=(topics.enriched,),
        )
    if name in (STREAM, STREAM_X2):
        return WorkerGroup(name, topics, cluster, run_dir, workers=2 if name == STREAM_X2 else 1)
    args = peer_args(cluster.bootstrap, topics, expect, run.reference_json, timeout)
    return ProgramSystem(name, topics, cluster, run_dir, PEER_MODULES[name], args)


def _checker(run: Run, name: str, topics: TopicSet) -> Callable[[Row], None]:
    if name == CEILING:
        return lambda row: check_copy(row, run.cluster, topics.enriched, run.truth)
    return lambda row: check_pipeline(
        row, run.cluster, topics, run.truth, allow_replays=name == STREAM_X2
    )


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
    with _running(make_system(run, row.name, topics, expect, o.timeout)) as system:
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
