"""The orders workload (``stream bench --workload orders``): ``stream/pipelines/orders.yaml``
as a user runs it, with everything it needs served by the harness.

* **Input**: orders from ``stream.loadgen.orders`` (≈260-byte JSON: 9 fields, a nested
  ``shipping`` object, an ``items`` array; ~2% invalid, each breaking one schema
  constraint), keyed by customer, to the run's ``<run>.orders`` topic.
* **Customer table**: the compacted ``<run>.customers`` topic, seeded here
  (``customer_table``: segment and country per customer; ~1% of orders come from
  customers it does not know, joined as null).
* **Exchange rates**: an HTTP service in this process (``FxService`` of
  :mod:`benchmarks.harness.fx`, shared with the orders integration test) answering
  ``/rates/{currency}`` with ``stream.loadgen.orders.FX_RATES``; the worker caches each
  answer for 60 s, so it is asked about once per currency and partition assignment.
* **Pipeline file**: ``orders.yaml`` rewritten into the run directory with this run's
  topic names and the service's URL (``write_pipeline``).

Verification (``check_orders``, after the counts every worker row gets): every valid
order enriched exactly once (distinct ``order_id`` == valid count) and, on a sample of
enriched records, the customer join, the fx join and the derived ``amount_eur`` equal
what the generator's ground truth implies.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson
import yaml
from confluent_kafka import Producer

from benchmarks.harness.cluster import Cluster, TopicSet
from benchmarks.harness.fx import FxService, fx_service
from benchmarks.harness.rows import FAILED, Row
from stream.loadgen.broker import quiet_config
from stream.loadgen.orders import (
    FX_RATES,
    OrderConfig,
    customer_table,
    expected_amount_eur,
    generate_orders,
)
from stream.pipelines import PIPELINES_DIR

CUSTOMERS: Final = 1_000
#: Enriched records whose joins and derived amount are checked field by field.
SAMPLE: Final = 2_000
ORDERS_PIPELINE: Final = PIPELINES_DIR / "orders.yaml"

__all__ = [
    "CUSTOMERS",
    "ORDERS_PIPELINE",
    "SAMPLE",
    "FxService",
    "OrdersInput",
    "check_orders",
    "fx_service",
    "produce_orders",
    "seed_customers",
    "write_pipeline",
]


def write_pipeline(path: Path, topics: TopicSet, customers_topic: str, fx_url: str) -> Path:
    """``orders.yaml`` with the row's topics, the run's customer topic and the fx URL."""
    spec = yaml.safe_load(ORDERS_PIPELINE.read_text())
    spec["topics"] = {
        "input": topics.input,
        "enriched": topics.enriched,
        "correlations": topics.correlations,
        "dlq": topics.dlq,
    }
    # YAML 1.1 reads the bare ``on`` key as True; write it back as ``on``
    spec["enrich"] = [{("on" if k is True else k): v for k, v in j.items()} for j in spec["enrich"]]
    for join in spec["enrich"]:
        if "table" in join:
            join["table"]["topic"] = customers_topic
        if "http" in join:
            join["http"]["url"] = fx_url
    spec["schema_file"] = str(ORDERS_PIPELINE.parent / spec["schema_file"])
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def seed_customers(bootstrap: str, topic: str, customers: int = CUSTOMERS) -> None:
    producer = Producer(quiet_config(bootstrap))
    for key, value in customer_table(customers).items():
        producer.produce(topic, orjson.dumps(value), key.encode())
    if producer.flush(60) != 0:
        raise RuntimeError(f"seeding {topic}: not every customer acknowledged")


@dataclass(frozen=True)
class OrdersInput:
    events: int
    invalid: int
    avg_record_bytes: float
    produced_events_per_s: float
    invalid_kinds: dict[str, int]


def produce_orders(
    bootstrap: str, topic: str, count: int, *, seed: int, invalid_ratio: float
) -> OrdersInput:
    """Generate and send ``count`` orders keyed by customer; wait for every ack."""
    config = OrderConfig(
        seed=seed,
        invalid_ratio=invalid_ratio,
        customers=CUSTOMERS,
        start_ms=int(time.time() * 1000),
    )
    producer = Producer(
        quiet_config(bootstrap)
        | {
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    kinds: Counter[str] = Counter()
    size = 0
    failed: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None and not failed:
            failed.append(str(error))

    started = time.monotonic()
    for record in generate_orders(count, config):
        if record.invalid_kind is not None:
            kinds[record.invalid_kind] += 1
        size += len(record.value)
        while True:
            try:
                producer.produce(topic, record.value, record.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0 or failed:
        raise RuntimeError(f"producing orders: {failed[0] if failed else 'not all acknowledged'}")
    seconds = time.monotonic() - started
    return OrdersInput(
        events=count,
        invalid=sum(kinds.values()),
        avg_record_bytes=size / max(count, 1),
        produced_events_per_s=count / seconds if seconds > 0 else 0.0,
        invalid_kinds=dict(kinds),
    )


class _Enriched(msgspec.Struct):
    order_id: str
    customer_id: str
    amount: float
    currency: str
    enrichment: dict[str, Any]


_decode = msgspec.json.Decoder(_Enriched).decode


def check_orders(row: Row, cluster: Cluster, topics: TopicSet, valid: int) -> None:
    """Every valid order once; joins and derived amount right on a sample."""
    table = customer_table(CUSTOMERS)
    ids: set[str] = set()
    total = checked = 0
    wrong: list[str] = []
    for batch in cluster.batches(topics.enriched, timeout=600):
        for m in batch:
            order = _decode(m.value() or b"{}")
            ids.add(order.order_id)
            total += 1
            if checked >= SAMPLE or total % 50:
                continue
            checked += 1
            enrichment = order.enrichment
            expected = expected_amount_eur({"amount": order.amount, "currency": order.currency})
            got = enrichment.get("amount_eur")
            if got is None or expected is None or abs(got - expected) > 1e-6 * max(1.0, expected):
                wrong.append(f"{order.order_id}: amount_eur {got} (expected {expected})")
            if enrichment.get("customer") != table.get(order.customer_id):
                wrong.append(f"{order.order_id}: customer {enrichment.get('customer')}")
            if enrichment.get("fx") != {"rate": FX_RATES[order.currency]}:
                wrong.append(f"{order.order_id}: fx {enrichment.get('fx')}")
            if (m.key() or b"").decode() != order.customer_id:
                wrong.append(f"{order.order_id}: key {m.key()!r}")
    row.detail["orders_checked"] = {
        "distinct_enriched": len(ids),
        "sampled": checked,
        "sample_errors": len(wrong),
    }
    if len(ids) != valid or len(ids) != total:
        row.fail(
            FAILED,
            f"{len(ids):,} distinct orders in {total:,} enriched records (expected {valid:,} once)",
        )
    if wrong:
        row.fail(FAILED, f"{len(wrong)} of {checked} sampled enriched orders wrong: {wrong[:3]}")
