"""Is a row's output right? Counted from the broker against the generator's ground truth.

Every input record must come out exactly once: a valid one in the enriched
topic, an invalid one in the DLQ. The worker also dead-letters *late* events
(stage ``correlate``, header ``dlq.stage``) after enriching them; those are
extra, reported, and not counted as input rejects. Peers write no headers.

Two workers in one group may legitimately replay records after a rebalance
(at-least-once). For that row surplus records are allowed if nothing is lost:
the distinct enriched event ids must equal the valid count and the distinct
DLQ source offsets the invalid count.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from benchmarks.harness.cluster import Cluster, TopicSet
from benchmarks.harness.rows import FAILED, Row
from stream.kafka.headers import (
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_STAGE,
    header_value,
)

LATE_STAGE = b"correlate"


@dataclass(frozen=True)
class GroundTruth:
    """What the generator sent: ``events`` records of which ``invalid`` break the contract."""

    events: int
    invalid: int

    @property
    def valid(self) -> int:
        return self.events - self.invalid


class _EventId(msgspec.Struct):
    event_id: str


_id_decoder = msgspec.json.Decoder(_EventId)


def check_copy(row: Row, cluster: Cluster, topic: str, truth: GroundTruth) -> None:
    """The ceiling: every record copied once."""
    row.outputs = {"copied": cluster.total(topic)}
    row.expected_outputs = {"copied": truth.events}
    if row.outputs != row.expected_outputs:
        row.fail(FAILED, f"copied {row.outputs['copied']:,} of {truth.events:,} records")


def check_pipeline(
    row: Row,
    cluster: Cluster,
    topics: TopicSet,
    truth: GroundTruth,
    allow_replays: bool,
    transactional: bool = False,
) -> None:
    """Enriched == valid and input rejects == invalid (or, with ``allow_replays``, no loss).

    ``transactional``: the outputs were written in transactions (exactly_once), so records
    are counted by reading them ``read_committed`` (commit markers take offsets; end
    offsets would overcount), as a downstream consumer of such a pipeline reads them."""
    count = cluster.count if transactional else cluster.total
    enriched = count(topics.enriched)
    rejects, late = _count_dlq(cluster, topics.dlq)
    row.outputs = {
        "enriched": enriched,
        "dlq": rejects,
        "dlq_late": late,
        "correlations": count(topics.correlations),
    }
    row.expected_outputs = {"enriched": truth.valid, "dlq": truth.invalid}
    if enriched == truth.valid and rejects == truth.invalid:
        return
    surplus = enriched >= truth.valid and rejects >= truth.invalid
    if allow_replays and surplus:
        distinct_enriched = _distinct_event_ids(cluster, topics.enriched)
        distinct_rejects = _distinct_dlq_sources(cluster, topics.dlq)
        if distinct_enriched == truth.valid and distinct_rejects == truth.invalid:
            replayed = enriched + rejects - truth.events
            row.notes.append(
                f"{replayed:,} records processed twice (replayed after a rebalance, "
                "at-least-once); none lost"
            )
            row.detail["replayed"] = replayed
            return
        row.fail(
            FAILED,
            f"lost records: {distinct_enriched:,} distinct enriched (expected {truth.valid:,}), "
            f"{distinct_rejects:,} distinct dead-lettered (expected {truth.invalid:,})",
        )
        return
    row.fail(
        FAILED,
        f"enriched {enriched:,} (expected {truth.valid:,}), "
        f"dead-lettered {rejects:,} (expected {truth.invalid:,})",
    )


def _count_dlq(cluster: Cluster, topic: str) -> tuple[int, int]:
    """(input rejects, late events) in the DLQ."""
    rejects = late = 0
    for batch in cluster.batches(topic):
        for m in batch:
            if header_value(m.headers(), DLQ_STAGE) == LATE_STAGE:
                late += 1
            else:
                rejects += 1
    return rejects, late


def _distinct_event_ids(cluster: Cluster, topic: str) -> int:
    ids: set[str] = set()
    for batch in cluster.batches(topic, timeout=600):
        ids.update(_id_decoder.decode(m.value() or b"{}").event_id for m in batch)
    return len(ids)


def _distinct_dlq_sources(cluster: Cluster, topic: str) -> int:
    sources: set[tuple[bytes | None, bytes | None]] = set()
    for batch in cluster.batches(topic):
        for m in batch:
            headers = m.headers()
            if header_value(headers, DLQ_STAGE) != LATE_STAGE:
                sources.add(
                    (
                        header_value(headers, DLQ_ORIGINAL_PARTITION),
                        header_value(headers, DLQ_ORIGINAL_OFFSET),
                    )
                )
    return len(sources)
