"""Two workers, ``kill -9``-ed in turn every few seconds and restarted, events flowing.

What must hold (per input record, matched by event id or ``dlq.original.*`` offset):

* nothing is lost: every valid event is in ``events.enriched``, every invalid one in
  the DLQ;
* ``exactly_once``: no copies at all (outputs read with ``read_committed``);
* ``at_least_once``: copies only of records at or after the committed offset of a
  partition the killed worker owned when it died (its uncommitted interval). They
  are counted and reported.

Before each kill the victim is frozen (SIGSTOP) so the committed offsets read then
are exactly the ones its successor resumes from.

Bounded replay (``at_least_once``): each duplicate is attributed to the kill whose
committed offset it follows most closely; per kill, the duplicates are at most what two
commit intervals plus one batch hold at the rate the victim was measured to consume
(its ``stream_events_consumed_total`` sampled every 0.25 s; README "Bounded replay").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.loadgen import EventGenerator, GeneratorConfig

from .harness import (
    BackgroundProducer,
    Pipeline,
    Position,
    RateSampler,
    Worker,
    account,
    chaos_events,
    committed_offsets,
    inputs_of,
    read_topic,
    wait_all_committed,
    workers,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

#: Short sessions so a killed member is noticed in seconds, not the default 15 s.
FAST_FAILOVER = json.dumps({"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"})
#: How long a (re)started victim processes before it is killed again.
RUN_BEFORE_KILL_S = 2.0
PRODUCE_SECONDS = 25.0
MIN_KILLS = 4
COMMIT_INTERVAL_S = 1.0  # the default commit_interval


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_minus_nine_loses_nothing(
    guarantee: str,
    pipeline_factory: Callable[..., Pipeline],
    workdir: Path,
    chaos_report: Callable[[dict[str, Any]], None],
) -> None:
    events = chaos_events(40_000)
    pipeline = pipeline_factory(partitions=4)
    generated = list(EventGenerator(GeneratorConfig(seed=7, invalid_ratio=0.02)).records(events))
    env = {"STREAM_PROCESSING_GUARANTEE": guarantee, "STREAM_KAFKA": FAST_FAILOVER}
    a = Worker(pipeline, workdir, "a", env=env)
    b = Worker(pipeline, workdir, "b", env=env)
    kills: list[tuple[list[int], dict[int, int]]] = []
    bounds: list[float] = []
    sampler = RateSampler([a, b])
    with workers(a, b):
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        producer = BackgroundProducer(
            pipeline, [(r.key, r.value) for r in generated], rate=events / PRODUCE_SECONDS
        )
        producer.start()
        sampler.start()
        victims = (a, b)
        while producer.is_alive() or len(kills) < MIN_KILLS:
            victim = victims[len(kills) % 2]
            victim.wait_ready(timeout=60)  # kill it while it works, not while it boots
            time.sleep(RUN_BEFORE_KILL_S)
            owned = victim.assigned()
            sampler.sample(victim)
            victim.freeze()  # no commit can happen between reading offsets and the kill
            kills.append((owned, committed_offsets(pipeline)))
            key = (victim.name, victim.starts)
            bounds.append(sampler.most_in(2 * COMMIT_INTERVAL_S, key) + sampler.largest_batch(key))
            victim.kill()
            victim.start()
        positions = producer.finish()
        sampler.stop()
        wait_all_committed(pipeline, timeout=120, workers=(a, b))
        for w in (a, b):
            w.wait_ready(assigned=False)  # a SIGTERM before start-up completes is not graceful
            code, _ = w.terminate()
            assert code == 0, f"worker {w.name} exited with {code}:\n{w.log_tail()}"

    enriched = read_topic(pipeline, pipeline.enriched)
    dlq = read_topic(pipeline, pipeline.dlq)
    inputs = inputs_of(positions, [r.event_id for r in generated], [r.valid for r in generated])
    ledger = account(inputs, enriched, dlq)
    per_kill = _duplicates_per_kill(ledger.duplicates, kills)
    notes = f"{len(kills)} kills"
    if guarantee == "at_least_once":
        notes += ", replayed per kill " + ", ".join(
            f"{n}/{bound:.0f}" for n, bound in zip(per_kill, bounds, strict=True)
        )
    if guarantee == "exactly_once":
        everything = read_topic(pipeline, pipeline.enriched, committed_only=False)
        notes += f", {len(everything) - len(enriched)} aborted copies hidden by read_committed"
    chaos_report(ledger.row("kill -9 workers in turn", guarantee=guarantee, notes=notes))
    assert ledger.lost == [], f"{len(ledger.lost)} records lost, first {ledger.lost[:5]}"
    assert ledger.misplaced == []
    assert ledger.enriched_out >= ledger.valid_in
    if guarantee == "exactly_once":
        assert ledger.duplicates == {}, f"{ledger.duplicate_count} duplicates in exactly_once"
    else:
        outside = [pos for pos in ledger.duplicates if not _uncommitted_when_killed(pos, kills)]
        assert outside == [], f"duplicates outside uncommitted ranges: {outside}"
        over = [(n, b) for n, b in zip(per_kill, bounds, strict=True) if n > b]
        assert over == [], f"replay above two commit intervals plus one batch: {over}"


def _uncommitted_when_killed(pos: Position, kills: list[tuple[list[int], dict[int, int]]]) -> bool:
    partition, offset = pos
    return any(
        partition in owned and offset >= committed.get(partition, 0) for owned, committed in kills
    )


def _duplicates_per_kill(
    duplicates: dict[Position, int], kills: list[tuple[list[int], dict[int, int]]]
) -> list[int]:
    """Duplicates attributed to the kill whose committed offset each one follows most closely."""
    per_kill = [0] * len(kills)
    for (partition, offset), extra in duplicates.items():
        candidates = [
            (committed.get(partition, 0), i)
            for i, (owned, committed) in enumerate(kills)
            if partition in owned and offset >= committed.get(partition, 0)
        ]
        if candidates:
            per_kill[max(candidates)[1]] += extra
    return per_kill
