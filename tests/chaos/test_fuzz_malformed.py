"""10,000 fuzzed malformed records (hypothesis) through a real worker: it never crashes.

The records (see ``malformed.py``: random bytes, truncated JSON, oversized
fields, wrong types, missing fields, deep nesting, invalid UTF-8) are mixed
with valid events and sent to the input topic. The worker must keep running
(exit 0 on SIGTERM at the end, never restarted), and every malformed record
must land in the DLQ exactly once, byte for byte, with a reason
(``dlq.error.class`` / ``dlq.error.message``) and ``dlq.attempts``; every valid
event must be enriched. A record a stage *raises* on (rather than rejects) is
isolated and dead-lettered as ``unprocessable`` with ``dlq.attempts: 2``
instead of failing its batch forever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from .harness import (
    Pipeline,
    Worker,
    account,
    inputs_of,
    numbered,
    produce,
    read_topic,
    wait_all_committed,
    workers,
)
from .malformed import malformed_values

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

FUZZED = 10_000
VALID_EVERY = 10  # one valid event after every ten malformed ones
REASONS = {
    "empty",
    "too_large",
    "malformed_json",
    "schema_violation",
    "bad_timestamp",
    "unprocessable",
}


def _draw_malformed(count: int) -> list[bytes]:
    """``count`` values from the strategy: deterministic (derandomized), no shrinking."""
    drawn: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(malformed_values)
    def collect(value: bytes) -> None:
        drawn.append(value)

    collect()
    return drawn[:count]


def test_fuzzed_garbage_goes_to_the_dlq_and_never_crashes_the_worker(
    pipeline_factory: Callable[..., Pipeline],
    workdir: Path,
    chaos_report: Callable[[dict[str, Any]], None],
) -> None:
    garbage = _draw_malformed(FUZZED)
    assert len(garbage) == FUZZED
    valid = numbered(FUZZED // VALID_EVERY)
    records: list[tuple[bytes | None, bytes | None]] = []
    ids: list[str] = []
    flags: list[bool] = []
    for i, value in enumerate(garbage):
        records.append((b"g%d" % i, value))
        ids.append(f"garbage-{i}")
        flags.append(False)
        if i % VALID_EVERY == VALID_EVERY - 1:
            key, event = valid[i // VALID_EVERY]
            records.append((key, event))
            ids.append(f"ev-{i // VALID_EVERY}")
            flags.append(True)

    pipeline = pipeline_factory(partitions=4)
    positions = produce(pipeline, records, **{"message.max.bytes": 2_000_000})
    worker = Worker(pipeline, workdir, "w")
    with workers(worker):
        worker.start()
        worker.wait_ready()
        wait_all_committed(pipeline, timeout=180, workers=[worker])
        assert worker.starts == 1
        code, _ = worker.terminate()
        assert code == 0, worker.log_tail()

    dlq = read_topic(pipeline, pipeline.dlq)
    ledger = account(inputs_of(positions, ids, flags), read_topic(pipeline, pipeline.enriched), dlq)
    value_at = {pos: records[i][1] for i, pos in enumerate(positions)}
    reasons: Counter[str] = Counter()
    for r in dlq:
        pos = (int(r.headers["dlq.original.partition"]), int(r.headers["dlq.original.offset"]))
        assert r.value == value_at[pos], f"DLQ record for {pos} is not the original bytes"
        reason = r.headers["dlq.error.class"].decode()
        assert reason in REASONS, reason
        assert r.headers["dlq.error.message"], f"no reason message for {pos}"
        expected_attempts = b"2" if reason == "unprocessable" else b"1"
        assert r.headers["dlq.attempts"] == expected_attempts
        reasons[reason] += 1
    chaos_report(
        ledger.row(
            f"{FUZZED} fuzzed malformed",
            guarantee="at_least_once",
            notes=", ".join(f"{k} {v}" for k, v in reasons.most_common()),
        )
    )
    assert ledger.lost == [] and ledger.misplaced == []
    assert ledger.duplicates == {}
    assert ledger.dlq_out == FUZZED
    assert ledger.enriched_out == len(valid)
