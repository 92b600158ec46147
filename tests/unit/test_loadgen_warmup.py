"""Load generator warm-up: the idempotent producer's id is awaited before the clock starts."""

from __future__ import annotations

import json

from stream.loadgen.producer import LoadOptions, ProducerIdWatch, producer_config


def _stats(state: str) -> str:
    return json.dumps({"name": "p", "eos": {"idemp_state": state, "producer_id": 7}})


def test_the_watch_is_ready_once_the_id_is_assigned() -> None:
    watch = ProducerIdWatch()
    for state in ("WaitTransport", "RequestPID", "WaitPID"):
        watch(_stats(state))
        assert not watch.ready
    watch("not json")
    watch(json.dumps({"no": "eos"}))
    assert not watch.ready
    watch(_stats("Assigned"))
    assert watch.ready
    watch(_stats("DrainBump"))  # later states are not its business: the clock has started
    assert watch.ready


def test_statistics_only_for_an_idempotent_producer() -> None:
    watch = ProducerIdWatch()
    idempotent = producer_config(LoadOptions(bootstrap="b:9092", count=1, acks="all"), print, watch)
    assert idempotent["stats_cb"] is watch
    assert idempotent["statistics.interval.ms"] > 0
    plain = producer_config(LoadOptions(bootstrap="b:9092", count=1, acks="1"), print, watch)
    assert "stats_cb" not in plain
