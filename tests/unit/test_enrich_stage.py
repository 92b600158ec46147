"""Enrich stage: reference data attached, unknown marked, failures degrade, bytes spliced."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import orjson

import tests.support.observability as obs
from stream.errors import TransientError
from stream.pipelines.observability import ServiceInfo, enriched_decoder, event_decoder
from stream.stages.enrich import Enricher, ReferenceTable


def raw(source: str, severity: str = "error", **extra: object) -> bytes:
    body = {
        "event_id": f"{source}-{severity}",
        "type": "t",
        "source": source,
        "timestamp": 1_767_225_600_000,
        "severity": severity,
        **extra,
    }
    return orjson.dumps(body)


def run(enricher: Enricher, raws: list[bytes]) -> tuple[list[dict[str, object]], int, int]:
    events = [event_decoder.decode(r) for r in raws]
    result = enricher.enrich(events, [e.event_time_ms() for e in events], raws)
    for value in result.values:
        enriched_decoder.decode(value)  # every output satisfies the output model
    return [orjson.loads(v) for v in result.values], result.unknown, result.degraded


def table() -> ReferenceTable:
    t = ReferenceTable()
    t.apply(
        [
            ("checkout", ServiceInfo(team="payments", tier=1, owner="ann")),
            ("search", ServiceInfo(team="discovery", tier=3)),
        ]
    )
    return t


def test_known_and_unknown_services_and_scores() -> None:
    out, unknown, degraded = run(
        obs.enricher(table()),
        [raw("checkout", "error"), raw("search", "info"), raw("ghost", "critical")],
    )
    assert out[0]["enrichment"] == {
        "known_service": True,
        "score": 4 * 3.0,
        "team": "payments",
        "tier": 1,
        "owner": "ann",
    }
    assert out[1]["enrichment"] == {
        "known_service": True,
        "score": 2 * 1.0,
        "team": "discovery",
        "tier": 3,
    }
    assert out[2]["enrichment"] == {"known_service": False, "score": 5.0}
    assert [o["event_time_ms"] for o in out] == [1_767_225_600_000] * 3
    assert (unknown, degraded) == (1, 0)


def test_output_keeps_input_fields_and_is_valid_json() -> None:
    out, _, _ = run(obs.enricher(table()), [raw("checkout", custom_field="kept") + b"  \n"])
    assert out[0]["custom_field"] == "kept"
    assert out[0]["source"] == "checkout"


def test_reserved_output_keys_in_input_are_not_duplicated() -> None:
    value = raw("checkout", enrichment="spoofed", event_time_ms=1)
    events = [event_decoder.decode(value)]
    result = obs.enricher(table()).enrich(events, [5], [value])
    assert result.values[0].count(b'"enrichment"') == 1
    assert orjson.loads(result.values[0])["event_time_ms"] == 5


def test_reference_updates_invalidate_the_cache() -> None:
    t = table()
    enricher = obs.enricher(t)
    assert run(enricher, [raw("ghost")])[0][0]["enrichment"]["known_service"] is False
    t.apply([("ghost", ServiceInfo(team="spooky", tier=2))])
    assert run(enricher, [raw("ghost")])[0][0]["enrichment"]["team"] == "spooky"
    t.apply([("ghost", None)])
    assert run(enricher, [raw("ghost")])[0][0]["enrichment"]["known_service"] is False


class FlakyLookup:
    """Fails while ``down`` is set; counts calls (one per batch at most)."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.version = 0

    def lookup(self, sources: Collection[str]) -> Mapping[str, ServiceInfo]:
        self.calls += 1
        if self.down:
            raise TransientError("reference store unavailable")
        return {s: ServiceInfo(team="t", tier=2) for s in sources}


class CountingBreaker:
    def __init__(self, open_after: int) -> None:
        self.failures = 0
        self.open_after = open_after

    def allow(self) -> bool:
        return self.failures < self.open_after

    def record_success(self) -> None:
        self.failures = 0

    def record_failure(self, exc: BaseException) -> None:
        self.failures += 1


def test_failing_lookup_degrades_instead_of_blocking_and_breaker_stops_calls() -> None:
    lookup = FlakyLookup()
    breaker = CountingBreaker(open_after=2)
    enricher = obs.enricher(lookup, breaker)
    batch = [raw("a"), raw("b"), raw("a", "info")]
    for _ in range(4):
        out, _, degraded = run(enricher, batch)
        assert degraded == 3
        assert all(o["enrichment"]["degraded"] is True for o in out)
    assert lookup.calls == 2, "an open breaker stops calling the dependency"
    lookup.down = False
    breaker.failures = 0  # breaker half-opens
    out, _, degraded = run(enricher, batch)
    assert degraded == 0 and out[0]["enrichment"]["team"] == "t"
    assert lookup.calls == 3, "one lookup per batch, not per event"
    run(enricher, batch)
    assert lookup.calls == 3, "cached afterwards"
