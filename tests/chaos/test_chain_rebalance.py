"""The agent chain under rebalances and kill -9, with a slow async user stage in it.

Two workers run the bundled pipeline plus ``tests.support.stages:echo_slowly`` (an
async stage that takes 50 ms per batch and emits one extra record per event), so
batches wait between agents. A third worker joins and leaves while events flow, and
one worker is killed with SIGKILL. What must hold:

* nothing is lost: every valid event is enriched, every invalid one dead-lettered;
* ``exactly_once``: no duplicates — a batch of a revoked partition still in the chain
  never reaches the outputs or the commit;
* the extra topic is covered by the checkpoint like every output: its records are
  exactly the enriched events (the same ids; in ``exactly_once`` the same count).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from stream.loadgen import EventGenerator, GeneratorConfig
from tests.support.stages import EXTRA_TOPIC_ENV

from .harness import (
    BackgroundProducer,
    Pipeline,
    Worker,
    account,
    chaos_events,
    enriched_event_id,
    inputs_of,
    read_topic,
    unique,
    wait_all_committed,
    workers,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

FAST_FAILOVER = json.dumps({"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"})
PRODUCE_SECONDS = 16.0


def _extra_topic(pipeline: Pipeline) -> str:
    name = unique("extra")
    admin = AdminClient(pipeline.conf())
    admin.create_topics([NewTopic(name, num_partitions=2)])[name].result(timeout=60)
    return name


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_join_leave_and_kill_with_batches_in_flight(
    guarantee: str,
    pipeline_factory: Callable[..., Pipeline],
    workdir: Path,
    chaos_report: Callable[[dict[str, Any]], None],
) -> None:
    events = chaos_events(20_000)
    pipeline = pipeline_factory(partitions=4)
    extra = _extra_topic(pipeline)
    config = workdir / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {"stages": [{"python": "tests.support.stages:echo_slowly", "topics": [extra]}]}
        )
    )
    generated = list(EventGenerator(GeneratorConfig(seed=3, invalid_ratio=0.02)).records(events))
    env = {
        "STREAM_PROCESSING_GUARANTEE": guarantee,
        "STREAM_KAFKA": FAST_FAILOVER,
        "STREAM_MAX_BATCH": "500",  # many small batches: several in flight at any time
        EXTRA_TOPIC_ENV: extra,
    }
    args = ["--config", str(config)]
    a, b, c = (Worker(pipeline, workdir, n, env=env, args=args) for n in "abc")
    with workers(a, b, c):
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        assert "echo_slowly" in (a.ready_body() or {}).get("agents", [])
        producer = BackgroundProducer(
            pipeline, [(r.key, r.value) for r in generated], rate=events / PRODUCE_SECONDS
        )
        producer.start()
        time.sleep(3)
        c.start()  # joins: partitions move while batches are between agents
        c.wait_ready()
        time.sleep(3)
        assert c.terminate()[0] == 0  # leaves: its partitions move back
        time.sleep(2)
        b.kill()  # its uncommitted batches are replayed by a
        b.start()
        positions = producer.finish()
        wait_all_committed(pipeline, timeout=120, workers=(a, b))
        for w in (a, b):
            w.wait_ready(assigned=False)
            code, _ = w.terminate()
            assert code == 0, f"worker {w.name} exited with {code}:\n{w.log_tail()}"

    enriched = read_topic(pipeline, pipeline.enriched)
    dlq = read_topic(pipeline, pipeline.dlq)
    inputs = inputs_of(positions, [r.event_id for r in generated], [r.valid for r in generated])
    ledger = account(inputs, enriched, dlq)
    extra_ids = Counter(
        json.loads(r.value or b"{}")["event_id"] for r in read_topic(pipeline, extra)
    )
    enriched_ids = Counter(enriched_event_id(r.value) for r in enriched)
    chaos_report(
        ledger.row(
            "join, leave, kill -9; slow async stage",
            guarantee=guarantee,
            notes=f"{sum(extra_ids.values())} extra records",
        )
    )
    assert ledger.lost == [], f"{len(ledger.lost)} records lost, first {ledger.lost[:5]}"
    assert ledger.misplaced == []
    assert set(extra_ids) == set(enriched_ids), "every extra record has its enriched event"
    if guarantee == "exactly_once":
        assert ledger.duplicates == {}, f"{ledger.duplicate_count} duplicates in exactly_once"
        assert extra_ids == enriched_ids, "one extra record per enriched event, no more"
