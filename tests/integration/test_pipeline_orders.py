"""A pipeline for another event shape, end to end on a real broker: orders.

``stream/pipelines/orders.yaml`` as a user would run it (topics renamed for the
test): its JSON Schema, a join on a compacted topic of customers, a join on an HTTP
exchange-rate service served here, a derived amount in euros and a hopping-window
rule on it. Asserted: every valid order enriched once with both lookups and the
derived field, keyed by customer; every invalid one in the DLQ with the field path
and the broken constraint; lineage headers on every output; and the rule's results
equal a brute-force computation over the same orders.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from benchmarks.harness.fx import fx_service as serve_fx
from stream.kafka import headers as h
from stream.pipelines import PIPELINES_DIR
from tests.support.pipeline import (
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    read_all,
    wait_until,
)

pytestmark = pytest.mark.broker

RATES = {"EUR": 1.0, "USD": 0.9, "GBP": 1.25}  # CHF: the service answers 404
MINUTE = 60_000
T0 = 1_796_205_600_000  # 2026-12-02T10:00:00Z
PARTITIONS = 2
CUSTOMERS = {f"c{i}": {"segment": "gold" if i % 2 else "basic", "country": "DE"} for i in range(6)}


@pytest.fixture
def fx_service() -> Iterator[tuple[str, collections.Counter[str]]]:
    """The benchmark's exchange-rate service with this test's rates (CHF unknown: 404)."""
    with serve_fx(RATES) as service:
        yield service.url, service.asked


def iso(ms: int) -> str:
    seconds = ms // 1000
    day_seconds = seconds % 86_400
    return (
        f"2026-12-02T{day_seconds // 3600:02d}:{day_seconds % 3600 // 60:02d}:{seconds % 60:02d}Z"
    )


def order(n: int, customer: str, t: int, amount: float, currency: str) -> dict[str, object]:
    return {
        "order_id": f"o{n}",
        "customer_id": customer,
        "created_at": iso(t),
        "amount": amount,
        "currency": currency,
        "items": [{"sku": f"SKU-{n % 7}", "qty": 1 + n % 3}],
        "shipping": {"country": "DE", "express": n % 5 == 0},
    }


def write_pipeline(topics: PipelineTopics, directory: Path, fx_url: str) -> Path:
    spec = yaml.safe_load((PIPELINES_DIR / "orders.yaml").read_text())
    spec["topics"] = {
        "input": topics.input,
        "enriched": topics.enriched,
        "correlations": topics.correlations,
        "dlq": topics.dlq,
    }
    spec["enrich"][0]["table"]["topic"] = topics.reference
    spec["enrich"][1]["http"]["url"] = fx_url
    spec["schema_file"] = str(PIPELINES_DIR / "orders.schema.json")
    spec["lineage"] = "full"  # every lineage header on enriched records too
    path = directory / "orders-test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_orders_pipeline_end_to_end(
    kafka_bootstrap: str, tmp_path: Path, fx_service: tuple[str, collections.Counter[str]]
) -> None:
    fx_url, asked = fx_service
    topics = PipelineTopics(kafka_bootstrap, partitions=PARTITIONS).create()
    pipeline = write_pipeline(topics, tmp_path, fx_url)
    rng = random.Random(12)
    valid: dict[str, dict[str, object]] = {}
    records: list[tuple[bytes | None, bytes, int]] = []
    for n in range(3_000):
        customer = f"c{rng.randrange(8)}"  # c6, c7 unknown to the customer table
        body = order(
            n,
            customer,
            T0 + n * 1000,
            float(rng.randrange(20, 700)),
            rng.choice(["EUR", "USD", "GBP", "CHF"]),
        )
        valid[str(body["order_id"])] = body
        records.append((customer.encode(), orjson.dumps(body), -1))
    invalid = {
        b'{"order_id": "bad-1"': "malformed_json",
        orjson.dumps({**order(9001, "c1", T0, 10.0, "EUR"), "amount": -3}): "`$.amount`",
        orjson.dumps({**order(9002, "c1", T0, 10.0, "EUR"), "currency": "XXX"}): "`$.currency`",
        orjson.dumps(
            {**order(9003, "c1", T0, 10.0, "EUR"), "items": [{"sku": "x", "qty": 1}]}
        ): "`$.items[0].sku`",
        orjson.dumps({**order(9004, "c1", T0, 10.0, "EUR"), "created_at": "yesterday"}): (
            "`$.created_at`"
        ),
    }
    records += [(b"c1", value, -1) for value in invalid]
    # One late-enough order per partition moves every partition's watermark past the windows.
    closers = [order(10_000 + p, f"closer{p}", T0 + 6 * 3_600_000, 1.0, "EUR") for p in range(2)]
    records += [(None, orjson.dumps(c), p) for p, c in enumerate(closers)]

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for key, value in ((k.encode(), orjson.dumps(v)) for k, v in CUSTOMERS.items()):
        producer.produce(topics.reference, value, key)
    for key, value, partition in records:
        producer.produce(topics.input, value, key, partition=partition)
    assert producer.flush(60) == 0

    worker = WorkerProcess(topics, tmp_path, args=["--config", str(pipeline)])
    try:
        worker.wait_ready()
        wait_until(
            lambda: (
                committed_offsets(kafka_bootstrap, topics.group, topics.input)
                == end_offsets(kafka_bootstrap, topics.input)
            ),
            timeout=120,
            message="offsets committed to the log end",
        )
    finally:
        assert worker.stop() == 0, worker.log()

    # Enriched: every valid order once, both lookups, the derived field, keyed by customer.
    positions = {
        orjson.loads(m.value()).get("order_id"): f"{topics.input}/{m.partition()}/{m.offset()}"
        for m in read_all(kafka_bootstrap, topics.input)
        if m.value() not in invalid
    }
    enriched = read_all(kafka_bootstrap, topics.enriched)
    outputs = {orjson.loads(m.value())["order_id"]: m for m in enriched}
    assert len(enriched) == len(valid) + len(closers)
    assert set(outputs) >= set(valid)
    assert sum(asked.values()) <= 2 * len(RATES) + 2, "one request per currency, then cached"
    for order_id, body in valid.items():
        m = outputs[order_id]
        out = orjson.loads(m.value())
        rate = RATES.get(str(body["currency"]))
        assert out["enrichment"]["customer"] == CUSTOMERS.get(str(body["customer_id"]))
        assert out["enrichment"]["fx"] == (None if rate is None else {"rate": rate})
        expected_eur = None if rate is None else float(body["amount"]) * rate  # type: ignore[arg-type]
        assert out["enrichment"]["amount_eur"] == pytest.approx(expected_eur)
        assert out["event_time_ms"] == T0 + int(order_id[1:]) * 1000
        assert m.key() == str(body["customer_id"]).encode()
        headers = m.headers() or []
        assert h.header_value(headers, "stream.pipeline") == b"orders"
        assert len(h.header_value(headers, "stream.pipeline.digest") or b"") == 16
        assert h.header_value(headers, "stream.input") == positions[order_id].encode()

    # DLQ: each invalid order with the field path and the broken constraint.
    dlq = read_all(kafka_bootstrap, topics.dlq)
    assert collections.Counter(m.value() for m in dlq) == collections.Counter(list(invalid))
    for m in dlq:
        message = (h.header_value(m.headers() or [], h.DLQ_ERROR_MESSAGE) or b"").decode()
        assert invalid[m.value()] in message or invalid[m.value()] == "malformed_json", message
        assert h.header_value(m.headers() or [], "stream.pipeline") == b"orders"

    # Correlations: big-spender equals a brute-force sum per customer and 10-minute window.
    correlation_records = read_all(kafka_bootstrap, topics.correlations)
    correlations = [orjson.loads(m.value()) for m in correlation_records]
    inputs = {
        (m.partition(), m.offset()): orjson.loads(m.value())
        for m in read_all(kafka_bootstrap, topics.input)
        if m.value() not in invalid
    }
    for m, c in zip(correlation_records, correlations, strict=True):
        # Lineage: the first and last input record counted, by offset, in the header too.
        source = (h.header_value(m.headers() or [], "stream.input") or b"").decode()
        topic, partition, span = source.rsplit("/", 2)
        assert (topic, span) == (topics.input, f"{c['first_offset']}-{c['last_offset']}")
        first = inputs[(int(partition), c["first_offset"])]
        last = inputs[(int(partition), c["last_offset"])]
        if c["rule"] == "big-spender":
            assert first["customer_id"] == last["customer_id"] == c["group"]["customer_id"]
        window = range(c["window_start"], c["window_end"])
        assert T0 + int(first["order_id"][1:]) * 1000 in window
        assert T0 + int(last["order_id"][1:]) * 1000 in window
    got = {
        (c["group"]["customer_id"], c["window_start"]): round(c["value"], 6)
        for c in correlations
        if c["rule"] == "big-spender"
    }
    sums: dict[tuple[str, int], float] = collections.defaultdict(float)
    for order_id, body in valid.items():
        rate = RATES.get(str(body["currency"]))
        if rate is None:
            continue
        t = T0 + int(order_id[1:]) * 1000
        for start in range((t // MINUTE - 9) * MINUTE, t + 1, MINUTE):
            sums[(str(body["customer_id"]), start)] += float(body["amount"]) * rate  # type: ignore[arg-type]
    expected = {k: round(v, 6) for k, v in sums.items() if v >= 5000}
    assert expected and got == expected
    assert all(c["final"] is True for c in correlations)

    # The test driver, fed the same input records, writes the same bytes (issue: the
    # driver and the worker must agree). Only dlq.failed_at (a wall-clock time) differs.
    driver_correlations = _driver_writes_the_same(
        pipeline, fx_url, kafka_bootstrap, topics, enriched, dlq
    )
    assert driver_correlations == _records(correlation_records), "correlations differ"


def _records(messages: list[Any], drop: tuple[str, ...] = ()) -> list[Any]:
    return sorted(
        (m.key(), m.value(), [(k, v) for k, v in (m.headers() or []) if k not in drop])
        for m in messages
    )


def _driver_writes_the_same(
    pipeline: Path, fx_url: str, bootstrap: str, topics: PipelineTopics, enriched: Any, dlq: Any
) -> list[Any]:
    """Run the driver over the topic's input; check enriched and DLQ; its correlations."""
    from stream.lookups import HttpLookup
    from stream.pipeline_spec import HttpSource
    from stream.testing import OutputRecord, PipelineDriver

    fx = HttpLookup(HttpSource(url=fx_url), "fx")
    driver = PipelineDriver(pipeline, tables={"customer": CUSTOMERS}, lookups={"fx": fx})
    inputs = sorted(read_all(bootstrap, topics.input), key=lambda m: (m.partition(), m.offset()))
    for m in inputs:
        driver.send(
            m.value(),
            key=m.key(),
            partition=m.partition(),
            timestamp_ms=m.timestamp()[1],
            headers=m.headers(),
        )
    out = driver.run()

    def rows(records: list[OutputRecord], drop: tuple[str, ...] = ()) -> list[Any]:
        return sorted(
            (r.key, r.value, [(k, v) for k, v in r.headers if k not in drop]) for r in records
        )

    assert rows(out.enriched) == _records(enriched), "driver and worker enriched records differ"
    failed_at = ("dlq.failed_at",)
    assert rows(out.dlq, failed_at) == _records(dlq, failed_at), "DLQ records differ"
    return rows(out.correlations)
