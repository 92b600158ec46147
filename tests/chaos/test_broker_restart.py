"""The broker goes away mid-run and comes back: the worker recovers by itself.

A dedicated local broker (not the session one: it is stopped) serves one
worker while events flow. The broker is stopped for several seconds — longer
than the checkpoint's flush timeout, so checkpoints fail and must be deferred,
not fatal — and started again on the same data directory. The same worker
process must carry on (no restart, exit 0 on SIGTERM at the end) and every
input record must be accounted for.

Bounded replay (``at_least_once``): the duplicates of each partition are at most what
two commit intervals plus one batch hold at the rate the worker was measured to consume
(README "Bounded replay"). Before the fix a worker whose session expired during the
outage re-read everything since its last pre-outage commit (0 to 15,000 of 20,000).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream import localbroker
from stream.loadgen import EventGenerator, GeneratorConfig

from .harness import (
    BackgroundProducer,
    Pipeline,
    RateSampler,
    Worker,
    account,
    chaos_events,
    committed_offsets,
    duplicates_by_partition,
    inputs_of,
    read_topic,
    replay_bound,
    wait_all_committed,
    wait_for,
    workers,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

PORTS = (45000, 45999)
OUTAGE_S = 8.0


@pytest.fixture
def own_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A broker of our own, and a function that stops it, waits and starts it again."""
    home = tmp_path_factory.mktemp("restart-broker")
    port = localbroker.free_port_pair(*PORTS)
    libs = localbroker.ensure_server_jars()
    bootstrap = localbroker.start(port, home, libs=libs)

    def bounce() -> None:
        assert localbroker.stop(port, home)
        time.sleep(OUTAGE_S)
        localbroker.start(port, home, libs=libs, timeout=120)

    try:
        yield bootstrap, bounce
    finally:
        localbroker.stop(port, home)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_worker_survives_a_broker_restart(
    guarantee: str,
    own_broker: tuple[str, Callable[[], None]],
    pipeline_factory: Callable[..., Pipeline],
    workdir: Path,
    chaos_report: Callable[[dict[str, Any]], None],
) -> None:
    bootstrap, bounce = own_broker
    events = chaos_events(40_000) // 2
    pipeline = pipeline_factory(partitions=2, bootstrap=bootstrap)
    generated = list(EventGenerator(GeneratorConfig(seed=11, invalid_ratio=0.02)).records(events))
    worker = Worker(pipeline, workdir, "w", env={"STREAM_PROCESSING_GUARANTEE": guarantee})
    sampler = RateSampler([worker])
    with workers(worker):
        worker.start()
        worker.wait_ready()
        sampler.start()
        producer = BackgroundProducer(
            pipeline, [(r.key, r.value) for r in generated], rate=events / 20
        )
        producer.start()
        wait_for(lambda: sum(committed_offsets(pipeline).values()) > events // 5, 60, "progress")
        bounce()
        positions = producer.finish()
        wait_all_committed(pipeline, timeout=150, workers=[worker])
        sampler.stop()
        replayed = worker.metric("stream_replayed_records_sum")
        assert worker.starts == 1 and worker.running, "the worker had to be restarted"
        deferred = worker.metric("stream_checkpoints_total", outcome="deferred")
        aborted = worker.metric("stream_checkpoints_total", outcome="aborted")
        retries = worker.metric("stream_retries_total")
        code, _ = worker.terminate()
        assert code == 0, worker.log_tail()
    ledger = account(
        inputs_of(positions, [r.event_id for r in generated], [r.valid for r in generated]),
        read_topic(pipeline, pipeline.enriched),
        read_topic(pipeline, pipeline.dlq),
    )
    per_partition = duplicates_by_partition(ledger)
    bound = replay_bound(sampler)
    chaos_report(
        ledger.row(
            f"broker stopped {OUTAGE_S:.0f}s + restart",
            guarantee=guarantee,
            notes=f"{deferred:.0f} checkpoints deferred, {aborted:.0f} txns aborted, "
            f"{retries:.0f} retries; no worker restart; replay per partition "
            f"{per_partition or 0} (bound {bound:.0f}), stream_replayed_records sum "
            f"{replayed:.0f}",
        )
    )
    assert ledger.lost == [] and ledger.misplaced == []
    assert deferred + aborted + retries >= 1, "the outage never reached a checkpoint"
    if guarantee == "exactly_once":
        assert ledger.duplicates == {}
    else:
        over = {p: n for p, n in per_partition.items() if n > bound}
        assert over == {}, f"replay above two commit intervals plus one batch ({bound:.0f})"
