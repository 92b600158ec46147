"""The orders workload of ``stream bench``: the generator's ground truth against the
compiled orders pipeline (no broker: ``stream.testing.PipelineDriver``), the pipeline
file the harness writes, the fx service, and how the run's ratios are reported."""

from __future__ import annotations

import collections
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from benchmarks.harness import select_workloads
from benchmarks.harness.cluster import TopicSet
from benchmarks.harness.orchestrate import rows_of
from benchmarks.harness.orders import FxService, write_pipeline
from benchmarks.harness.report import comparisons, render_table
from benchmarks.harness.rows import ROW_NAMES, Row
from stream.config import load_settings
from stream.errors import ConfigError
from stream.loadgen.orders import (
    FX_RATES,
    INVALID_KINDS,
    OrderConfig,
    customer_table,
    expected_amount_eur,
    generate_orders,
)
from stream.pipelines import PIPELINES_DIR


def test_generator_is_deterministic_and_every_invalid_kind_occurs() -> None:
    config = OrderConfig(seed=7, invalid_ratio=0.05)
    first = list(generate_orders(5_000, config))
    assert first == list(generate_orders(5_000, config))
    kinds = collections.Counter(r.invalid_kind for r in first if not r.valid)
    assert set(kinds) == set(INVALID_KINDS)
    assert 0.03 < sum(kinds.values()) / len(first) < 0.07
    assert len({r.order_id for r in first}) == len(first)
    for record in first:
        if record.valid:
            order = json.loads(record.value)
            assert order["customer_id"].encode() == record.key
            assert len(order) == 9 and order["items"] and "country" in order["shipping"]


def test_the_orders_pipeline_enriches_valid_orders_and_dead_letters_every_invalid_kind() -> None:
    from stream.testing import PipelineDriver

    records = list(generate_orders(2_000, OrderConfig(seed=3, invalid_ratio=0.05)))
    table = customer_table(1_000)
    driver = PipelineDriver(
        PIPELINES_DIR / "orders.yaml",
        tables={"customer": table, "fx": {c: {"rate": r} for c, r in FX_RATES.items()}},
    )
    for record in records:
        driver.send(record.value, key=record.key)
    out = driver.run()
    invalid = [r.value for r in records if not r.valid]
    assert sorted(m.value or b"" for m in out.dlq) == sorted(invalid)
    assert len(out.enriched) == len(records) - len(invalid)
    for m in out.enriched:
        order = m.json()
        assert order["enrichment"]["amount_eur"] == pytest.approx(expected_amount_eur(order))
        assert order["enrichment"]["customer"] == table.get(order["customer_id"])
        assert m.key == order["customer_id"].encode()


def test_pipeline_file_names_the_run_topics_and_the_fx_service(tmp_path: Path) -> None:
    topics = TopicSet(prefix="run.orders-stream", input="run.orders", reference="x", partitions=2)
    path = write_pipeline(tmp_path / "p.yaml", topics, "run.customers", "http://h:1/r/{currency}")
    spec = yaml.safe_load(path.read_text())
    assert spec["topics"]["input"] == "run.orders"
    assert spec["topics"]["enriched"] == "run.orders-stream.enriched"
    joins = {j["name"]: j for j in spec["enrich"]}
    assert joins["customer"]["table"]["topic"] == "run.customers"
    assert joins["customer"]["on"] == "customer_id"
    assert joins["fx"]["http"]["url"] == "http://h:1/r/{currency}"
    settings = load_settings(path)  # what the worker will load
    assert settings.pipeline == "orders" and settings.derive and len(settings.joins) == 2


def test_fx_service_answers_rates_and_404_for_unknown_currencies() -> None:
    service = FxService().start()
    try:
        url = service.url.replace("{currency}", "USD")
        with urllib.request.urlopen(url, timeout=5) as response:
            assert json.loads(response.read()) == {"rate": FX_RATES["USD"]}
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(service.url.replace("{currency}", "XXX"), timeout=5)
        assert service.asked == {"USD": 1, "XXX": 1}
    finally:
        service.stop()


def test_workload_selection() -> None:
    assert select_workloads(None) == ("observability",)
    assert select_workloads("orders,observability") == ("observability", "orders")
    assert select_workloads("all") == ("observability", "orders")
    with pytest.raises(ConfigError):
        select_workloads("payments")
    assert rows_of("orders", ROW_NAMES) == ("ceiling", "stream", "stream-eos")
    assert rows_of("observability", ROW_NAMES) == ROW_NAMES


def _row(name: str, rate: float, cpu: float, workload: str = "observability") -> Row:
    return Row(name, 1000, workload=workload, events_per_s=rate, cpu_seconds_per_million=cpu)


def test_ratios_against_the_stream_row_of_the_same_run() -> None:
    rows = [
        _row("ceiling", 200_000, 5.0),
        _row("stream", 100_000, 10.0),
        _row("stream-eos", 65_000, 14.0),
        _row("orders/ceiling", 150_000, 6.0, "orders"),
        _row("orders/stream", 80_000, 12.5, "orders"),
    ]
    found = {c["row"]: c for c in comparisons(rows)}
    assert found["orders/stream"]["percent_of_stream"] == 80.0
    assert found["orders/stream"]["met"] is True
    assert found["orders/stream"]["percent_of_stream_by_cpu"] == 80.0
    assert found["stream-eos"]["percent_of_stream"] == 65.0
    assert found["stream-eos"]["met"] is False
    table = render_table(rows)
    # % of ceiling against the row's own workload's ceiling: 80k of 150k
    orders_line = next(line for line in table.splitlines() if "orders/stream" in line)
    assert "53%" in orders_line and "80%" in orders_line
