"""Pipeline files for shapes other than the bundled one: orders, sensor readings; bad files.

The stages are built exactly as the worker builds them (``build_stages``), with
in-memory lookups instead of a topic and an HTTP service.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.config import load_settings
from stream.errors import ConfigError
from stream.models import encoder
from stream.pipeline import build_stages
from stream.pipelines import PIPELINES_DIR
from stream.stages.enrich import ReferenceTable

ORDERS = PIPELINES_DIR / "orders.yaml"
RATES = {"EUR": 1.0, "USD": 0.9, "GBP": 1.2}  # CHF unknown: amount_eur is null
MINUTE = 60_000
T0 = 1_796_205_600_000  # 2026-12-02T10:00:00Z, a whole hour


class Rates:
    """The fx lookup: what the HTTP service would answer; counts the keys asked."""

    version = 0

    def __init__(self) -> None:
        self.asked: list[str] = []

    def lookup(self, keys: Collection[str]) -> Mapping[str, Mapping[str, Any]]:
        self.asked.extend(keys)
        return {k: {"rate": RATES[k]} for k in keys if k in RATES}


def customers() -> ReferenceTable:
    table = ReferenceTable()
    table.apply(
        [(f"c{i}", {"segment": "gold" if i % 2 else "basic", "country": "DE"}) for i in range(4)]
    )
    return table


def order(i: int, customer: str, minute: float, amount: float, currency: str = "EUR") -> bytes:
    created = T0 + int(minute * MINUTE)
    iso = f"2026-12-02T{10 + created // 3_600_000 - T0 // 3_600_000:02d}:" + (
        f"{(created // MINUTE) % 60:02d}:{(created // 1000) % 60:02d}Z"
    )
    return orjson.dumps(
        {
            "order_id": f"o{i}",
            "customer_id": customer,
            "created_at": iso,
            "amount": amount,
            "currency": currency,
            "items": [{"sku": "ABC-1", "qty": 1}],
            "shipping": {"country": "DE", "express": i % 2 == 0},
        }
    )


def test_orders_pipeline_enriches_derives_and_matches_a_brute_force_window_sum() -> None:
    settings = load_settings(ORDERS)
    assert settings.group_id == "orders" and settings.topics.dlq == "orders.dlq"
    rates = Rates()
    stages = build_stages(settings, {"customer": customers(), "fx": rates})
    rng = random.Random(7)
    raws: list[bytes] = []
    truth: list[tuple[str, int, float | None]] = []
    for i in range(400):
        customer = f"c{rng.randrange(5)}"  # c4 is unknown to the customer table
        minute = i * 0.1  # 40 minutes of orders, in order
        currency = rng.choice(["EUR", "USD", "GBP", "CHF"])
        amount = float(rng.randrange(50, 900))
        raws.append(order(i, customer, minute, amount, currency))
        rate = RATES.get(currency)
        truth.append((customer, T0 + int(minute * MINUTE), None if rate is None else amount * rate))
    raws.append(order(999, "zz", 120, 1.0))  # moves the watermark past every window
    bad = [
        b'{"order_id": "x"}',
        order(1000, "c1", 1, -5.0),
        order(1001, "c1", 1, 5.0).replace(b'"qty":1', b'"qty":0'),
    ]
    result = stages.validator.validate(raws + bad)
    assert [(r.position, r.error_class) for r in result.rejects] == [
        (401, "schema_violation"),
        (402, "schema_violation"),
        (403, "schema_violation"),
    ]
    assert "`$.items[0].qty`" in result.rejects[2].message
    assert "`$.amount`" in result.rejects[1].message
    events, times = result.events, result.event_times
    enriched = stages.enricher.enrich(events, times, [raws[i] for i in result.indices])
    assert enriched.kept is None and len(enriched.values) == 401
    assert sorted(set(rates.asked)) == ["CHF", "EUR", "GBP", "USD"]  # once per distinct key
    outputs = [orjson.loads(v) for v in enriched.values]
    for out, (customer, _, amount_eur) in zip(outputs, truth, strict=False):
        assert out["enrichment"]["amount_eur"] == pytest.approx(amount_eur)
        expected_customer = None if customer == "c4" else customers().lookup([customer])[customer]
        assert out["enrichment"]["customer"] == expected_customer
        assert out["items"] == [{"sku": "ABC-1", "qty": 1}]  # input bytes kept as they were
    assert stages.output_key is not None and stages.output_key(events[0]) == truth[0][0].encode()

    correlations = stages.correlator.process(0, events, times, 0).correlations
    got = {
        (c.group["customer_id"], c.window_start): round(c.value, 6)
        for c in correlations
        if c.rule == "big-spender"
    }
    # Brute force: every 10-minute window starting on a whole minute, per customer.
    sums: dict[tuple[str, int], float] = defaultdict(float)
    for customer, t, amount_eur in truth:
        if amount_eur is None:
            continue
        first = (t // MINUTE - 9) * MINUTE
        for start in range(first, t + 1, MINUTE):
            sums[(customer, start)] += amount_eur
    expected = {k: round(v, 6) for k, v in sums.items() if v >= 5000}
    assert expected and got == expected
    assert all(c.final for c in correlations)
    assert b'"final":true' in encoder.encode(correlations[0])  # every listed field is written


def test_sensor_pipeline_inline_schema_seconds_and_at_least_over_its_enum(tmp_path: Path) -> None:
    pipeline = tmp_path / "sensors.yaml"
    pipeline.write_text(
        """
pipeline: sensors
topics: {input: readings, enriched: readings.out, correlations: readings.alerts, dlq: readings.dlq}
event_time: {field: meta.ts, unit: s}
schema:
  sensor: {type: string, required: true}
  level: {enum: [ok, warn, alarm], required: true}
  celsius: {type: number, required: true, minimum: -90, maximum: 150}
  meta: {type: object, required: true, properties: {ts: {type: integer, required: true}}}
derive:
  fahrenheit: "celsius * 1.8 + 32.0"
correlate:
  rules:
    - {name: hot, kind: threshold, match: {at_least: {level: warn}}, group_by: [sensor],
       aggregate: max(fahrenheit), window: {type: tumbling, size: 1m}, when: ">= 200"}
"""
    )
    stages = build_stages(load_settings(pipeline), {})
    base = T0 // 1000
    readings = [
        {"sensor": "s1", "level": level, "celsius": c, "meta": {"ts": base + i}}
        for i, (level, c) in enumerate(
            [("ok", 120.0), ("warn", 95.0), ("alarm", 101.0), ("warn", 20.0), ("ok", 0.5)]
        )
    ]
    readings.append({"sensor": "s9", "level": "ok", "celsius": 1.0, "meta": {"ts": base + 600}})
    raws = [orjson.dumps(r) for r in readings] + [b'{"sensor": "s1", "level": "hot"}']
    result = stages.validator.validate(raws)
    assert result.event_times[:2] == [T0, T0 + 1000]
    assert [r.error_class for r in result.rejects] == ["schema_violation"]
    enriched = stages.enricher.enrich(
        result.events, result.event_times, [raws[i] for i in result.indices]
    )
    assert orjson.loads(enriched.values[0])["enrichment"] == {"fahrenheit": 248.0}
    out = stages.correlator.process(0, result.events, result.event_times, 0).correlations
    # warn/alarm readings of s1: 203 F, 213.8 F, 68 F -> max 213.8 (the ok reading at 248 F
    # is below the at_least level and does not count)
    assert [(c.group, round(c.value, 3)) for c in out] == [({"sensor": "s1"}, 213.8)]


BASE = """
pipeline: p
event_time: {field: ts}
schema: {id: {type: string, required: true}, ts: {type: integer, required: true},
         kind: {enum: [a, b]}}
"""


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        (BASE + "enrichh: []\n", "enrichh", "Extra inputs"),
        (BASE + "max_batch: many\n", "max_batch", "valid integer"),
        (
            "pipeline: p\nevent_time: {field: ts}\nschema_file: missing.schema.json\n",
            "",
            "missing.schema.json",
        ),
        (BASE.replace("kind: {enum: [a, b]}", "kind: {type: string, format: email}"), "", "format"),
        (
            BASE + "correlate: {rules: [{name: r, kind: threshold, group_by: [knd],"
            " window: {type: tumbling, size: 1m}, when: '>= 1'}]}\n",
            "correlate.rules[0]",
            "unknown field 'knd'",
        ),
        (BASE + "derive: {x: 'idd + \"-\"'}\n", "derive.x", "unknown field 'idd'"),
        (
            BASE + "enrich: [{name: a, table: {topic: t}, on: id}, {name: a, table: {topic: u},"
            " on: id}]\n",
            "joins",
            "duplicate enrichment name 'a'",
        ),
        (BASE + "enrich: [{name: a, table: {topic: t}, on: nope}]\n", "enrich[0].on", "'nope'"),
        (
            BASE.replace("event_time: {field: ts}", "event_time: {field: when}"),
            "event_time",
            "when",
        ),
    ],
)
def test_bad_pipeline_files_fail_with_file_path_and_reason(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        settings = load_settings(file)
        build_stages(settings, {"a": ReferenceTable()})
    message = str(caught.value)
    assert "bad.yaml" in message and reason in message, message
    assert where in message
    assert "\n" not in message


def test_join_missing_policies_dlq_and_drop(tmp_path: Path) -> None:
    for policy, rejects, dropped in (("dlq", 1, 0), ("drop", 0, 1)):
        file = tmp_path / f"{policy}.yaml"
        file.write_text(
            BASE + f"enrich: [{{name: a, table: {{topic: t}}, on: id, missing: {policy}}}]\n"
        )
        table = ReferenceTable()
        table.apply([("known", {"v": 1})])
        stages = build_stages(load_settings(file), {"a": table})
        raws = [orjson.dumps({"id": i, "ts": T0}) for i in ("known", "ghost", "known")]
        result = stages.validator.validate(raws)
        enriched = stages.enricher.enrich(result.events, result.event_times, raws)
        assert enriched.kept == [0, 2]
        assert len(enriched.rejects) == rejects and enriched.dropped == dropped
        if rejects:
            assert enriched.rejects[0].error_class == "enrichment_missing"
            assert "'ghost'" in enriched.rejects[0].message


def test_bundled_pipeline_keeps_its_output_shape() -> None:
    table = ReferenceTable()
    table.apply([("checkout", {"team": "pay", "tier": 1, "owner": "ann"})])
    stages = build_stages(load_settings(), {"service": table})
    raws = [
        orjson.dumps(
            {"event_id": f"e{i}", "type": "t", "source": s, "timestamp": T0, "severity": v}
        )
        for i, (s, v) in enumerate(itertools.product(["checkout", "ghost"], ["info", "critical"]))
    ]
    result = stages.validator.validate(raws)
    out = stages.enricher.enrich(result.events, result.event_times, raws)
    assert [orjson.loads(v)["enrichment"] for v in out.values] == [
        {"known_service": True, "team": "pay", "tier": 1, "owner": "ann", "score": 6.0},
        {"known_service": True, "team": "pay", "tier": 1, "owner": "ann", "score": 15.0},
        {"known_service": False, "score": 2.0},
        {"known_service": False, "score": 5.0},
    ]


@pytest.mark.parametrize(
    ("lineage", "headers"),
    [
        ("input", ["stream.input"]),
        ("full", ["stream.pipeline", "stream.pipeline.digest", "stream.input"]),
        ("off", []),
    ],
)
def test_lineage_headers_of_enriched_records(
    tmp_path: Path, lineage: str, headers: list[str]
) -> None:
    from stream.testing import PipelineDriver

    file = tmp_path / "p.yaml"
    file.write_text(BASE + f"lineage: {lineage}\n")
    driver = PipelineDriver(file, now_ms=T0)
    driver.send({"id": "a", "ts": T0})
    driver.send(b"not json")
    out = driver.run()
    (enriched,) = out.enriched
    assert [k for k, _ in enriched.headers] == headers
    if headers:
        assert enriched.header("stream.input") == b"events/0/0"
    (dead,) = out.dlq  # DLQ records always carry the whole lineage
    assert dead.header("stream.pipeline") == b"p"
    assert len(dead.header("stream.pipeline.digest") or b"") == 16
