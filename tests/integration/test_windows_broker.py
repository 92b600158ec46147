"""Window engine on a real broker: results are exact, and identical whether the stream is
processed in one run, with the worker killed (-9) and restarted mid-stream, or with a
second worker joining (rebalance). Idle partitions close their windows without traffic."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import orjson
import pytest

from stream.loadgen.generator import generate
from stream.models import correlation_decoder
from stream.pipelines.observability import SEVERITY_RANK
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

pytestmark = pytest.mark.broker

EVENTS = 40_000
WINDOW_MS = 10_000
THRESHOLD = 3
PIPELINE = f"""
correlate:
  idle_timeout_ms: {{idle_ms}}
rules:
  - name: errors-10s
    kind: threshold
    match: {{severity: [error, critical]}}
    group_by: [source]
    window: {{type: tumbling, size: {WINDOW_MS}ms, grace: 3s}}
    aggregate: count
    when: ">= {THRESHOLD}"
  - name: warning-sessions
    kind: threshold
    match: {{severity: warning}}
    group_by: [source]
    window: {{type: session, gap: 4s, grace: 3s}}
    aggregate: count
    when: ">= 2"
  - name: errors-hopping
    kind: threshold
    match: {{severity_at_least: error}}
    group_by: [source]
    window: {{type: hopping, size: 20s, advance: 5s, grace: 3s}}
    aggregate: count
    when: ">= 5"
"""

Result = tuple[str, tuple[tuple[str, str], ...], int, int, float, int]


def records(start_ms: int):  # type: ignore[no-untyped-def]
    # 200 events per second of event time: 40k events span 200 s (20 tumbling windows).
    return list(
        generate(EVENTS, seed=5, sources=12, start_ms=start_ms, event_rate=200, jitter_ms=1_500)
    )


def expected_tumbling(recs) -> set[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for r in recs:
        if not r.valid:
            continue
        body = orjson.loads(r.value)
        if SEVERITY_RANK[body["severity"]] >= SEVERITY_RANK["error"]:
            counts[(body["source"], r.event_time_ms - r.event_time_ms % WINDOW_MS)] += 1
    return {(src, start, n) for (src, start), n in counts.items() if n >= THRESHOLD}


def correlations(bootstrap: str, topic: str) -> tuple[set[Result], int]:
    found = [correlation_decoder.decode(m.value()) for m in read_all(bootstrap, topic)]
    results = [
        (c.rule, tuple(sorted(c.group.items())), c.window_start, c.window_end, c.value, c.count)
        for c in found
        if c.final
    ]
    return set(results), len(results) - len(set(results))


def config(tmp_path: Path, idle_ms: int) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.replace("{idle_ms}", str(idle_ms)))
    return str(path)


def sentinels(topics: PipelineTopics, event_time_ms: int) -> None:
    """One event per partition far past every window (matching no rule): the watermark
    then closes all windows by event time, deterministically, in every scenario."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": topics.bootstrap})
    for p in range(topics.partitions):
        body = {
            "event_id": f"sentinel-{p}",
            "type": "sentinel",
            "source": "sentinel",
            "timestamp": event_time_ms,
            "severity": "debug",
        }
        producer.produce(topics.input, orjson.dumps(body), b"sentinel", partition=p)
    assert producer.flush(30) == 0


def run(topics: PipelineTopics, tmp_path: Path, recs, scenario: str) -> tuple[set[Result], int]:  # type: ignore[no-untyped-def]
    # A long idle timeout: a partition stalled by a rebalance must not close windows early.
    args = ("--config", config(tmp_path, idle_ms=600_000))
    produce(topics.bootstrap, topics.input, ((r.key, r.value) for r in recs))
    sentinels(topics, max(r.event_time_ms for r in recs) + 120_000)
    total = sum(end_offsets(topics.bootstrap, topics.input).values())

    def committed() -> int:
        return sum(
            max(o, 0)
            for o in committed_offsets(topics.bootstrap, topics.group, topics.input).values()
        )

    workers = [WorkerProcess(topics, tmp_path, args=args)]
    try:
        workers[0].wait_ready()
        if scenario == "kill":
            wait_until(lambda: committed() > total * 0.3, timeout=90, message="30% committed")
            assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL
            workers.append(WorkerProcess(topics, tmp_path, args=args))
            workers[-1].wait_ready()
        elif scenario == "rebalance":
            wait_until(lambda: committed() > total * 0.2, timeout=90, message="20% committed")
            workers.append(WorkerProcess(topics, tmp_path, args=args))
            workers[-1].wait_ready(partitions=False)
        # Correlations are flushed before the offsets they follow are committed.
        wait_until(lambda: committed() == total, timeout=120, message="input committed")
    finally:
        for w in workers:
            if w.proc.poll() is None:
                assert w.stop() == 0, w.log()
    return correlations(topics.bootstrap, topics.correlations)


def test_results_exact_and_identical_across_crash_and_rebalance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    recs = records(start_ms=int(time.time() * 1000) - 3_600_000)
    outcomes = {}
    for scenario in ("uninterrupted", "kill", "rebalance"):
        topics = PipelineTopics(kafka_bootstrap, partitions=4).create()
        home = tmp_path / scenario
        home.mkdir()
        outcomes[scenario] = run(topics, home, recs, scenario)

    uninterrupted, duplicates = outcomes["uninterrupted"]
    assert duplicates == 0
    tumbling = {
        (dict(g)["source"], start, count)
        for rule, g, start, _, _, count in uninterrupted
        if rule == "errors-10s"
    }
    assert tumbling == expected_tumbling(recs), "tumbling windows equal a brute-force count"
    assert {r[0] for r in uninterrupted} == {"errors-10s", "warning-sessions", "errors-hopping"}
    for scenario in ("kill", "rebalance"):
        results, dupes = outcomes[scenario]
        assert results == uninterrupted, f"{scenario}: same correlations as one uninterrupted run"
        print(
            f"{scenario}: {len(results)} correlations, {dupes} duplicates (at-least-once replays)"
        )


def test_idle_partition_closes_windows_without_new_events(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = PipelineTopics(kafka_bootstrap, partitions=1).create()
    now = int(time.time() * 1000)
    burst = [
        (
            b"svc-a",
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "type": "t",
                    "source": "svc-a",
                    "timestamp": now + i,
                    "severity": "error",
                }
            ),
        )
        for i in range(4)
    ]
    worker = WorkerProcess(topics, tmp_path, args=("--config", config(tmp_path, idle_ms=2000)))
    try:
        worker.wait_ready()
        produce(kafka_bootstrap, topics.input, burst)
        # No further traffic: the watermark never passes the window end by event time.
        wait_until(
            lambda: len(read_all(kafka_bootstrap, topics.correlations)) > 0,
            timeout=40,
            message="idle partition closed its window",
        )
    finally:
        assert worker.stop() == 0, worker.log()
    results, _ = correlations(kafka_bootstrap, topics.correlations)
    tumbling = [r for r in results if r[0] == "errors-10s"]
    assert [(dict(r[1])["source"], r[5]) for r in tumbling] == [("svc-a", 4)]
