"""Scaling a live consumer group 1 → 2 → 3 → 2 → 1 workers under steady load.

``stream loadgen`` writes a bounded, deterministic stream at a steady rate into a
6-partition input topic while the group grows by starting ``stream worker``
processes and shrinks by SIGTERM, one membership change per step. Afterwards:

* nothing is lost — every valid event is in events.enriched, every invalid one
  in the DLQ (matched to the generator's ground truth through the input record's
  value and partition/offset);
* no duplicates — cooperative-sticky rebalancing commits a revoked partition's
  offsets before its new owner starts, and SIGTERM commits before leaving;
* at every step the partitions are spread over the live workers (their ``/ready``
  ``assigned_partitions`` are disjoint and cover all 6);
* a table of what each step cost: time until the assignment settled, the longest
  a partition went unprocessed (largest gap between consecutive output records of
  one input partition), the worst end-to-end latency, and per-worker throughput
  from ``stream_events_consumed_total``. Printed (``pytest -s``) and written as JSON.

The test runs once per group protocol (``classic``: client-side cooperative-sticky;
``consumer``: KIP-848, broker-side assignment) and, after both, prints one line per
protocol — the longest stall of any partition and the slowest settle over all steps —
and writes ``scaling-protocols.json`` (README "Scaling behaviour" quotes it).
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from stream.kafka import headers as h
from stream.loadgen.generator import GeneratedRecord, generate
from stream.observability.scrape import scrape
from stream.pipelines.observability import enriched_decoder
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    read_all,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(150)]

PROTOCOLS = ("classic", "consumer")
#: protocol -> summary of its run, filled by the test, printed after both ran.
SUMMARIES: dict[str, dict[str, object]] = {}

PARTITIONS = 6
RATE = 4000  # events/s, steady
STEP_SECONDS = 9.0
#: Membership after each change: grow to three workers, then shrink back to one.
MEMBERSHIP = (1, 2, 3, 2, 1)
EVENTS = int(RATE * STEP_SECONDS * len(MEMBERSHIP))
SEED = 23
INVALID_RATIO = 0.02
SETTLE_TIMEOUT = 45.0


@dataclass
class Step:
    """One membership state: from the change that started it to the next change."""

    workers: int
    change: str
    started: float  # wall clock, s
    settle_s: float = 0.0
    ended: float = 0.0
    assignment: dict[str, list[int]] = field(default_factory=dict)
    consumed: dict[str, float] = field(default_factory=dict)
    events_per_s: dict[str, float] = field(default_factory=dict)
    lag_at_end: float = 0.0
    max_partition_gap_s: float = 0.0
    max_latency_s: float = 0.0
    p99_latency_s: float = 0.0


class Member:
    """A running worker and the consumed counter it had at the start of the current step."""

    def __init__(self, name: str, process: WorkerProcess, input_topic: str) -> None:
        self.name = name
        self.process = process
        self.input_topic = input_topic
        self.consumed_before = 0.0
        self.consumed_total = 0.0

    def assigned(self) -> list[int] | None:
        try:
            _, body = self.process.get("/ready")
            return list(json.loads(body)["assigned_partitions"])
        except (OSError, ValueError, KeyError):
            return None  # busy restoring state inside a rebalance callback, or not up yet

    def consumed(self) -> float | None:
        sample = scrape(self.process.url("/metrics"))
        if sample is None:
            return None
        return sample.total("stream_events_consumed_total", topic=self.input_topic)

    def lag(self) -> float:
        sample = scrape(self.process.url("/metrics"))
        return 0.0 if sample is None else sample.total("stream_consumer_lag")


def settled_assignment(members: list[Member]) -> dict[str, list[int]] | None:
    """The assignment if it is complete and disjoint with every worker owning some."""
    assignment: dict[str, list[int]] = {}
    for member in members:
        partitions = member.assigned()
        if not partitions:
            return None
        assignment[member.name] = partitions
    owned = [p for partitions in assignment.values() for p in partitions]
    if sorted(owned) != list(range(PARTITIONS)):
        return None  # a partition is unowned (mid-rebalance) or owned twice
    return assignment


def wait_settled(members: list[Member], since: float) -> tuple[dict[str, list[int]], float]:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        assignment = settled_assignment(members)
        if assignment is not None:
            return assignment, time.time() - since
        time.sleep(0.1)
    raise AssertionError(
        f"assignment of {[m.name for m in members]} did not settle in {SETTLE_TIMEOUT}s: "
        f"{ {m.name: m.assigned() for m in members} }"
    )


def start_load(topics: PipelineTopics, start_ms: int, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "loadgen",
                "--bootstrap-servers",
                topics.bootstrap,
                "--topic",
                topics.input,
                "--count",
                str(EVENTS),
                "--rate",
                str(RATE),
                "--seed",
                str(SEED),
                "--start-time",
                str(start_ms),
                "--invalid-ratio",
                str(INVALID_RATIO),
                "--seed-reference",
                "--reference-topic",
                topics.reference,
                "--no-progress",
            ],
            env=topics.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def close_step(step: Step, members: list[Member]) -> None:
    """Per-worker consumption during the step, from each worker's counter."""
    step.ended = time.time()
    seconds = step.ended - step.started
    for member in members:
        now = member.consumed()
        assert now is not None, f"{member.name} stopped answering /metrics"
        step.consumed[member.name] = now - member.consumed_before
        step.events_per_s[member.name] = round((now - member.consumed_before) / seconds)
        member.consumed_before = member.consumed_total = now
    step.lag_at_end = sum(member.lag() for member in members)


@dataclass
class Processed:
    """One valid input record and when its (first) enriched output was produced."""

    partition: int
    offset: int
    appended_ms: int
    produced_ms: int


def measure_pauses(steps: list[Step], processed: list[Processed]) -> None:
    """Largest per-partition output gap and worst latency, attributed to the step they began in."""
    by_partition: dict[int, list[Processed]] = {}
    for record in processed:
        by_partition.setdefault(record.partition, []).append(record)
    bounds = [(s.started * 1000, s.ended * 1000) for s in steps]

    def step_of(ms: float) -> Step | None:
        for step, (lo, hi) in zip(steps, bounds, strict=True):
            if lo <= ms < hi:
                return step
        return None

    latencies: dict[int, list[float]] = {id(s): [] for s in steps}
    for records in by_partition.values():
        records.sort(key=lambda r: r.offset)
        for before, after in itertools.pairwise(records):
            step = step_of(before.produced_ms)
            if step is not None:
                gap = (after.produced_ms - before.produced_ms) / 1000
                step.max_partition_gap_s = max(step.max_partition_gap_s, round(gap, 3))
        for record in records:
            step = step_of(record.appended_ms)
            if step is not None:
                latencies[id(step)].append((record.produced_ms - record.appended_ms) / 1000)
    for step in steps:
        values = sorted(latencies[id(step)])
        if values:
            step.max_latency_s = round(values[-1], 3)
            step.p99_latency_s = round(values[int(len(values) * 0.99)], 3)


LEGEND = (
    "settle: from the change (worker process spawned, or SIGTERM sent) until /ready of every "
    "worker shows all partitions assigned, disjoint, none idle\n"
    "max gap: longest time between processing two consecutive records of one input partition\n"
    "lat: enriched record produce time minus input append time, for inputs appended in the step\n"
    "events/s: each worker's stream_events_consumed_total over the step (input is a steady "
    f"{RATE:,}/s, so this is its share, not its capacity)"
)


def format_table(steps: list[Step], totals: dict[str, float]) -> str:
    lines = [
        f"{'step':<26} {'settle s':>8} {'max gap s':>9} {'p99 lat s':>9} {'max lat s':>9} "
        f"{'lag end':>7}  assignment / events/s per worker"
    ]
    for step in steps:
        per_worker = ", ".join(
            f"{name}{step.assignment.get(name, [])}={step.events_per_s.get(name, 0):,.0f}/s"
            for name in sorted(step.assignment)
        )
        lines.append(
            f"{step.change:<26} {step.settle_s:>8.2f} {step.max_partition_gap_s:>9.2f} "
            f"{step.p99_latency_s:>9.2f} {step.max_latency_s:>9.2f} {step.lag_at_end:>7.0f}  "
            f"{per_worker}"
        )
    lines.append(
        "consumed per worker (total): "
        + ", ".join(f"{name}={count:,.0f}" for name, count in sorted(totals.items()))
    )
    return "\n".join([*lines, LEGEND])


@pytest.fixture(scope="module", autouse=True)
def _compare_protocols(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    if not SUMMARIES:
        return
    lines = [f"{'protocol':<9} {'max stall s':>11} {'max settle s':>12} {'settle per step s':<30}"]
    for protocol, summary in SUMMARIES.items():
        lines.append(
            f"{protocol:<9} {summary['max_partition_gap_s']:>11.2f} "
            f"{summary['max_settle_s']:>12.2f} {summary['settle_per_step_s']}"
        )
    path = tmp_path_factory.getbasetemp() / "scaling-protocols.json"
    path.write_text(json.dumps(SUMMARIES, indent=2))
    print("\n" + "\n".join(lines) + f"\nprotocol comparison: {path}")


@pytest.mark.parametrize("group_protocol", PROTOCOLS)
def test_group_scales_up_and_down_without_loss(
    kafka_bootstrap: str, tmp_path: Path, group_protocol: str
) -> None:
    started = time.monotonic()
    topics = PipelineTopics(kafka_bootstrap, partitions=PARTITIONS).create()
    members: list[Member] = []
    retired: list[Member] = []
    steps: list[Step] = []
    names = iter(f"w{i}" for i in range(1, 10))

    def add_worker() -> Member:
        process = WorkerProcess(
            topics, tmp_path, extra_env={"STREAM_GROUP_PROTOCOL": group_protocol}
        )
        member = Member(next(names), process, topics.input)
        members.append(member)
        return member

    def retire_worker() -> None:
        member = members.pop()
        final = member.consumed()
        member.consumed_total = final if final is not None else member.consumed_total
        code = member.process.stop(signal.SIGTERM)
        assert code == 0, member.process.log_path.read_text(errors="replace")[-4000:]
        retired.append(member)

    start_ms = int(time.time() * 1000)
    load: subprocess.Popen[bytes] | None = None
    try:
        first = add_worker()
        first.process.wait_ready(timeout=60)
        load = start_load(topics, start_ms, tmp_path / "loadgen.log")
        step = Step(1, "start with w1", time.time())
        step.assignment, _ = wait_settled(members, step.started)
        steps.append(step)
        time.sleep(STEP_SECONDS)

        for previous, workers in itertools.pairwise(MEMBERSHIP):
            close_step(steps[-1], members)
            change_at = time.time()
            if workers > previous:
                added = add_worker()
                change = f"+{added.name} ({previous}->{workers})"
            else:
                change = f"-{members[-1].name} SIGTERM ({previous}->{workers})"
                retire_worker()
            step = Step(workers, change, change_at)
            step.assignment, step.settle_s = wait_settled(members, change_at)
            step.settle_s = round(step.settle_s, 2)
            steps.append(step)
            time.sleep(max(0.0, change_at + STEP_SECONDS - time.time()))
        close_step(steps[-1], members)

        assert load.wait(60) == 0, (tmp_path / "loadgen.log").read_text()
        ends = end_offsets(kafka_bootstrap, topics.input)
        assert sum(ends.values()) == EVENTS
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, topics.group, topics.input) == ends,
            timeout=60,
            message="committed offsets reach the log end",
        )
        while members:
            retire_worker()
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        for member in members:
            member.process.stop(signal.SIGKILL)

    truth = {r.value: r for r in generate(EVENTS, seed=SEED, **_generator_options(start_ms))}
    inputs = read_all(kafka_bootstrap, topics.input)
    by_position: dict[tuple[int, int], GeneratedRecord] = {}
    for m in inputs:
        by_position[(m.partition(), m.offset())] = truth[m.value()]
    assert len(by_position) == EVENTS == len(truth), "the input is exactly the generated stream"
    valid = {r.event_id for r in truth.values() if r.valid}
    invalid_positions = {pos for pos, r in by_position.items() if not r.valid}

    enriched = read_all(kafka_bootstrap, topics.enriched)
    produced_at: dict[str, int] = {}
    enriched_ids: Counter[str] = Counter()
    for m in enriched:
        event_id = enriched_decoder.decode(m.value()).event_id
        enriched_ids[event_id] += 1
        ts = m.timestamp()[1]
        produced_at[event_id] = min(ts, produced_at.get(event_id, ts))

    dlq_stages: Counter[str] = Counter()
    dlq_validate: Counter[tuple[int, int]] = Counter()
    for m in read_all(kafka_bootstrap, topics.dlq):
        hdrs = m.headers() or []
        stage = (h.header_value(hdrs, h.DLQ_STAGE) or b"").decode()
        dlq_stages[stage] += 1
        if stage == "validate":
            partition = int(h.header_value(hdrs, h.DLQ_ORIGINAL_PARTITION) or b"-1")
            offset = int(h.header_value(hdrs, h.DLQ_ORIGINAL_OFFSET) or b"-1")
            dlq_validate[(partition, offset)] += 1

    processed = [
        Processed(m.partition(), m.offset(), m.timestamp()[1], produced_at[r.event_id])
        for m in inputs
        if (r := by_position[(m.partition(), m.offset())]).valid and r.event_id in produced_at
    ]
    measure_pauses(steps, processed)
    totals = {m.name: m.consumed_total for m in retired}
    enriched_duplicates = sum(enriched_ids.values()) - len(enriched_ids)
    dlq_duplicates = sum(dlq_validate.values()) - len(dlq_validate)
    report = {
        "group_protocol": group_protocol,
        "events": EVENTS,
        "rate": RATE,
        "partitions": PARTITIONS,
        "valid": len(valid),
        "invalid": len(invalid_positions),
        "enriched_records": sum(enriched_ids.values()),
        "enriched_duplicates": enriched_duplicates,
        "dlq_by_stage": dict(dlq_stages),
        "dlq_validate_duplicates": dlq_duplicates,
        "consumed_per_worker": totals,
        "steps": [asdict(s) for s in steps],
        "test_seconds": round(time.monotonic() - started, 1),
    }
    report_path = tmp_path / "scaling.json"
    report_path.write_text(json.dumps(report, indent=2))
    print("\n" + format_table(steps, totals))
    print(
        f"events {EVENTS:,} at {RATE:,}/s; enriched duplicates {enriched_duplicates}, "
        f"DLQ duplicates {dlq_duplicates}; DLQ by stage {dict(dlq_stages)}; "
        f"test took {report['test_seconds']}s"
    )
    print(f"scaling report: {report_path}")
    changes = steps[1:]
    SUMMARIES[group_protocol] = {
        "max_partition_gap_s": max(s.max_partition_gap_s for s in changes),
        "max_settle_s": max(s.settle_s for s in changes),
        "settle_per_step_s": [s.settle_s for s in changes],
        "gap_per_step_s": [s.max_partition_gap_s for s in changes],
        "max_latency_s": max(s.max_latency_s for s in changes),
    }

    assert set(enriched_ids) == valid, "every valid event enriched, nothing else"
    assert set(dlq_validate) == invalid_positions, "every invalid event in the DLQ"
    assert [len(s.assignment) for s in steps] == list(MEMBERSHIP)
    assert enriched_duplicates == 0
    assert dlq_duplicates == 0


def _generator_options(start_ms: int) -> dict[str, object]:
    """What ``stream loadgen`` passes to the generator for the flags used above."""
    return {"start_ms": start_ms, "event_rate": RATE, "invalid_ratio": INVALID_RATIO}
