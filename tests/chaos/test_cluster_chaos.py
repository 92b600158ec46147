"""Two workers on the local three-node cluster while brokers fail (RF 3, min ISR 2).

Each scenario runs in both guarantees with events flowing (``STREAM_CHAOS_EVENTS``/4,
default 10,000, over ~12 s) and injects one fault after a fifth of the input is
committed:

* ``kill-leader`` — ``kill -9`` of the node leading most input partitions, restarted
  after its leaderships moved;
* ``rolling-restart`` — every node stopped and started in turn, waiting for full ISR
  in between (as an operator would);
* ``isolate-controller`` — the active KRaft controller's link down (network
  namespace) for ``ISOLATION_S``, longer than the workers' session timeout (15 s,
  classic protocol; KIP-848 sessions are the broker's 45 s), then up again;
* ``degraded-link`` — this kernel has no ``sch_netem``, so ``tc netem`` cannot add
  latency or loss here: instead the busiest node is frozen for 0.3 s of every 1 s
  (SIGSTOP/SIGCONT) for ``DEGRADED_S`` — requests to it stall in bursts, as on a
  lossy link, without its sessions expiring.

What must hold afterwards: nothing lost or misplaced; every partition committed to
its end and every worker's ``stream_consumer_lag`` back to 0 (nothing stalled);
``exactly_once`` has no duplicates; the correlations equal those an uninterrupted run
computes from the same input (the chain in-process, :func:`reference_correlations`) —
exactly in ``exactly_once``, per window after de-duplication in ``at_least_once``;
and in ``at_least_once`` the duplicates of each partition (its replay) are at most
what two commit intervals plus one batch hold at the rate the workers were measured
to consume (README "Bounded replay").

Event time advances slowly (25 events per second of event time) so the one-minute
windows close by event time during the run; the idle timeout is set far out so no
window closes by the wall clock while a partition stands still in a fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.loadgen import EventGenerator, GeneratorConfig
from tests.support.cluster import ClusterHandle

from .harness import (
    BackgroundProducer,
    Pipeline,
    RateSampler,
    Record,
    Worker,
    account,
    by_window,
    chaos_events,
    committed_offsets,
    correlation_keys,
    create_pipeline,
    delete_pipeline,
    duplicates_by_partition,
    inputs_of,
    read_topic,
    reference_correlations,
    replay_bound,
    wait_all_committed,
    wait_for,
    workers,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 4
PRODUCE_S = 12.0
COMMIT_INTERVAL_S = 1.0
ISOLATION_S = 20.0
DEGRADED_S = 20.0
KILLED_FOR_S = 12.0  # longer than broker.session.timeout.ms (9 s): leaderships move
WORKER_ENV = {
    "STREAM_COMMIT_INTERVAL": str(COMMIT_INTERVAL_S),
    "STREAM_CORRELATE__IDLE_TIMEOUT_MS": "600000",
}


@pytest.fixture(autouse=True)
def _healthy_after(kafka_cluster: ClusterHandle) -> Iterator[None]:
    yield
    kafka_cluster.restore()


# -- the faults --------------------------------------------------------------------------------


def busiest_leader(cluster: ClusterHandle, topic: str) -> int:
    leaders = list(cluster.leaders(topic).values())
    return max(sorted(set(leaders)), key=leaders.count)


def kill_leader(cluster: ClusterHandle, pipeline: Pipeline) -> str:
    node = busiest_leader(cluster, pipeline.input)
    cluster.kill(node)
    time.sleep(KILLED_FOR_S)
    cluster.start(node)
    return f"node {node} (leader of the most input partitions) kill -9'd for {KILLED_FOR_S:.0f}s"


def rolling_restart(cluster: ClusterHandle, pipeline: Pipeline) -> str:
    for node in (1, 2, 3):
        cluster.stop(node)
        cluster.start(node)
        for topic in (pipeline.input, pipeline.enriched):
            cluster.wait_full_isr(topic, timeout=90)
    return "nodes 1, 2, 3 stopped and started in turn, full ISR in between"


def isolate_controller(cluster: ClusterHandle, pipeline: Pipeline) -> str:
    node = cluster.status().active_controller
    assert node is not None
    if cluster.netns:
        cluster.isolate(node)
        time.sleep(ISOLATION_S)
        cluster.heal(node)
        how = "link down (netns)"
    else:  # no namespaces here: the node's JVM is frozen instead
        cluster.pause(node)
        time.sleep(ISOLATION_S)
        cluster.resume(node)
        how = f"SIGSTOP (no netns: {cluster.netns_error})"
    return f"active controller node {node} isolated {ISOLATION_S:.0f}s, {how}"


def degraded_link(cluster: ClusterHandle, pipeline: Pipeline) -> str:
    node = busiest_leader(cluster, pipeline.input)
    deadline = time.monotonic() + DEGRADED_S
    bursts = 0
    while time.monotonic() < deadline:
        cluster.pause(node)
        time.sleep(0.3)
        cluster.resume(node)
        time.sleep(0.7)
        bursts += 1
    return f"node {node} frozen 0.3s of every 1s for {DEGRADED_S:.0f}s ({bursts} bursts; no netem)"


SCENARIOS: dict[str, Callable[[ClusterHandle, Pipeline], str]] = {
    "kill-leader": kill_leader,
    "rolling-restart": rolling_restart,
    "isolate-controller": isolate_controller,
    "degraded-link": degraded_link,
}


# -- the test ----------------------------------------------------------------------------------


def read(pipeline: Pipeline, topic: str, *, committed_only: bool = True) -> list[Record]:
    """read_topic, retried: right after a failover a fresh client may not know a partition."""
    last: Exception | None = None
    for _ in range(5):
        try:
            return read_topic(pipeline, topic, committed_only=committed_only)
        except Exception as exc:
            last = exc
            time.sleep(2.0)
    raise AssertionError(f"could not read {topic}: {last}")


def lag_zero(ws: tuple[Worker, ...]) -> bool:
    return all(w.metric("stream_consumer_lag") == 0 for w in ws)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_cluster_fault(
    scenario: str,
    guarantee: str,
    kafka_cluster: ClusterHandle,
    workdir: Path,
    chaos_report: Callable[[dict[str, Any]], None],
) -> None:
    started = time.monotonic()
    events = chaos_events(40_000) // 4
    pipeline = create_pipeline(kafka_cluster.bootstrap, PARTITIONS, prefix="cluster")
    generated = list(
        EventGenerator(GeneratorConfig(seed=23, invalid_ratio=0.02, event_rate=25)).records(events)
    )
    records = [(r.key, r.value) for r in generated]
    env = {"STREAM_PROCESSING_GUARANTEE": guarantee, **WORKER_ENV}
    a = Worker(pipeline, workdir, "a", env=env)
    b = Worker(pipeline, workdir, "b", env=env)
    sampler = RateSampler([a, b])
    try:
        with workers(a, b):
            a.start()
            b.start()
            a.wait_ready(timeout=90)
            b.wait_ready(timeout=90)
            sampler.start()
            producer = BackgroundProducer(pipeline, records, rate=events / PRODUCE_S)
            producer.start()
            wait_for(
                lambda: sum(committed_offsets(pipeline).values()) > events // 5, 60, "progress"
            )
            fault_started = time.monotonic()
            what = SCENARIOS[scenario](kafka_cluster, pipeline)
            fault_s = time.monotonic() - fault_started
            positions = producer.finish()
            wait_all_committed(pipeline, timeout=150, workers=(a, b))
            wait_for(lambda: lag_zero((a, b)), 30, "consumer lag 0 on both workers")
            sampler.stop()
            replayed = [w.metric("stream_replayed_records_sum") for w in (a, b)]
            for w in (a, b):
                code, _ = w.terminate()
                assert code == 0, f"worker {w.name} exited with {code}:\n{w.log_tail()}"
            assert a.starts == b.starts == 1, "a worker had to be restarted"

        ledger = account(
            inputs_of(positions, [r.event_id for r in generated], [r.valid for r in generated]),
            read(pipeline, pipeline.enriched),
            read(pipeline, pipeline.dlq),
        )
        got = correlation_keys(read(pipeline, pipeline.correlations))
    finally:
        sampler.stop()
        delete_pipeline(pipeline)
    want = reference_correlations(records, positions)
    if guarantee == "exactly_once":
        correlations_equal = got == want
    else:
        windows = by_window(got)
        correlations_equal = (
            all(len(v) == 1 for v in windows.values())
            and sorted(next(iter(v)) for v in windows.values()) == want
        )
    per_partition = duplicates_by_partition(ledger)
    bound = replay_bound(sampler, COMMIT_INTERVAL_S)
    chaos_report(
        ledger.row(
            f"cluster: {scenario}",
            guarantee=guarantee,
            notes=f"{what}; fault {fault_s:.0f}s; correlations {len(got)}/{len(want)} "
            f"{'equal' if correlations_equal else 'DIFFER'}; replay per partition "
            f"{per_partition or 0} (bound {bound:.0f}); stream_replayed_records sum "
            f"{sum(replayed):.0f}; {time.monotonic() - started:.0f}s",
        )
    )
    assert ledger.lost == [], f"{len(ledger.lost)} records lost, first {ledger.lost[:5]}"
    assert ledger.misplaced == []
    assert want, "the input produced no correlations to compare"
    assert correlations_equal, f"correlations differ: got {len(got)}, want {len(want)}"
    if guarantee == "exactly_once":
        assert ledger.duplicates == {}, f"{ledger.duplicate_count} duplicates in exactly_once"
    else:
        over = {p: n for p, n in per_partition.items() if n > bound}
        assert over == {}, f"replay above two commit intervals plus one batch ({bound:.0f})"
