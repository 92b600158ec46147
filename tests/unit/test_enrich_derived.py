"""Enrich: derived fields over high-cardinality inputs (the joins' part built once per
join key, the derived fields per event) give what CEL gives, and may read join keys."""

from __future__ import annotations

import shutil
from pathlib import Path

from stream.loadgen.orders import FX_RATES, OrderConfig, customer_table, generate_orders
from stream.testing import PipelineDriver

PIPELINES = Path(__file__).resolve().parents[2] / "stream" / "pipelines"
TAG = """  tag: "currency == null ? 'none' : currency + '/' + customer_id"\n"""


def _driver(tmp_path: Path, extra_derive: str = "") -> PipelineDriver:
    text = (PIPELINES / "orders.yaml").read_text()
    (tmp_path / "orders.yaml").write_text(text.replace("derive:\n", "derive:\n" + extra_derive))
    shutil.copy(PIPELINES / "orders.schema.json", tmp_path / "orders.schema.json")
    config = OrderConfig()
    tables = {
        "customer": customer_table(config.customers),
        "fx": {currency: {"rate": rate} for currency, rate in FX_RATES.items()},
    }
    return PipelineDriver(
        tmp_path / "orders.yaml", tables=tables, now_ms=config.start_ms + 3_600_000
    )


def test_amount_eur_per_event_and_join_keys_as_inputs(tmp_path: Path) -> None:
    driver = _driver(tmp_path, TAG)
    orders = list(generate_orders(3000, OrderConfig()))
    for order in orders:
        driver.send(order.value, key=order.key, timestamp_ms=driver.now_ms)
    out = driver.run()
    assert len(out.enriched) + len(out.dlq) == len(orders)
    valid = {o.order_id for o in orders if o.valid}
    for record in out.enriched:
        event = record.json()
        assert event["order_id"] in valid
        enrichment = event["enrichment"]
        rate = FX_RATES.get(event["currency"])
        expected = None if rate is None else float(event["amount"]) * rate
        assert enrichment["amount_eur"] == expected
        # a derived field reads the join's key field itself (it read null before)
        assert enrichment["tag"] == f"{event['currency']}/{event['customer_id']}"


def test_same_output_in_one_batch_or_many(tmp_path: Path) -> None:
    """The join-key cache carries over batches without changing a byte."""
    orders = list(generate_orders(2000, OrderConfig()))
    one, many = _driver(tmp_path), _driver(tmp_path)
    for order in orders:
        one.send(order.value, key=order.key, timestamp_ms=one.now_ms)
    whole = one.run().enriched
    parts = []
    for start in range(0, len(orders), 300):
        for order in orders[start : start + 300]:
            many.send(order.value, key=order.key, timestamp_ms=many.now_ms)
        parts.extend(many.run().enriched)
    assert [r.value for r in whole] == [r.value for r in parts]
