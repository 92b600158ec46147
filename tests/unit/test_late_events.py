"""Late events are no failure: ``correlate.late_policy: topic | dlq | drop``.

Run through :class:`stream.testing.PipelineDriver` (the worker's chain and output
routing, in-process) on the bundled pipeline, whose ``error-burst`` rule counts
error events per source in 60 s tumbling windows with 10 s grace.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream.runtime.outputs import LATE_RULE, LATE_WINDOW_END, LINEAGE_INPUT
from stream.stages.correlate import late_window_end
from stream.testing import PipelineDriver
from stream.windows.compiled import compile_rule
from stream.windows.spec import parse_rules

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of 60 s


def event(event_id: str, at_ms: int, severity: str = "error") -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "http_request",
        "source": "checkout",
        "timestamp": at_ms,
        "severity": severity,
    }


def driver(tmp_path: Path, policy: str | None) -> PipelineDriver:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"correlate: {{late_policy: {policy}}}\n" if policy else "{}\n")
    return PipelineDriver(path, tables={"service": {}}, now_ms=NOW_MS + 600_000)


def send_one_late(d: PipelineDriver) -> None:
    """Five minutes of stream time, then an event for a window closed long ago."""
    d.send(event("early", NOW_MS + 1_000), key="k1")
    d.send(event("recent", NOW_MS + 300_000), key="k2")
    d.send(event("late", NOW_MS + 2_000), key="k3", headers=[("traceparent", b"00-abc")])


def test_default_policy_sends_late_events_to_their_own_topic(tmp_path: Path) -> None:
    d = driver(tmp_path, None)
    assert d.settings.correlate.late_policy == "topic"
    assert d.settings.late_topic == "events.late"
    send_one_late(d)
    out = d.run()

    assert out.dlq == [], "a late event is no failure"
    assert [r.json()["event_id"] for r in out.enriched] == ["early", "recent", "late"]
    [late] = out.late
    assert late.topic == "events.late"
    assert late.key == b"k3"
    assert orjson.loads(late.value or b"") == event("late", NOW_MS + 2_000), "original bytes"
    assert late.header(LATE_RULE) == b"error-burst"
    assert late.header(LATE_WINDOW_END) == str(NOW_MS + 60_000).encode()
    assert late.header(LINEAGE_INPUT) == b"events/0/2"
    assert late.header("traceparent") == b"00-abc", "the original headers are kept"


def test_late_topic_name_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("topics: {late: audit.late}\n")
    d = PipelineDriver(path, tables={"service": {}}, now_ms=NOW_MS + 600_000)
    send_one_late(d)
    assert [r.topic for r in d.run().late] == ["audit.late"]


def test_dlq_policy_keeps_the_old_behaviour_with_the_rule_in_the_message(tmp_path: Path) -> None:
    d = driver(tmp_path, "dlq")
    send_one_late(d)
    out = d.run()
    assert out.late == []
    [dead] = out.dlq
    assert dead.header("dlq.error.class") == b"late"
    assert dead.header("dlq.stage") == b"correlate"
    message = (dead.header("dlq.error.message") or b"").decode()
    assert "rule error-burst" in message and str(NOW_MS + 60_000) in message
    assert len(out.enriched) == 3, "a late event is still enriched"


def test_drop_policy_writes_nothing_extra(tmp_path: Path) -> None:
    d = driver(tmp_path, "drop")
    send_one_late(d)
    out = d.run()
    assert out.late == [] and out.dlq == []
    assert len(out.enriched) == 3


def test_an_event_late_only_for_a_rule_it_does_not_match_is_not_late(tmp_path: Path) -> None:
    d = driver(tmp_path, None)
    d.send(event("recent", NOW_MS + 300_000))
    d.send(event("old-info", NOW_MS + 2_000, severity="info"))  # error-burst ignores info
    out = d.run()
    late_rules = {r.header(LATE_RULE) for r in out.late}
    assert b"error-burst" not in late_rules


@pytest.mark.parametrize(
    ("window", "time", "end"),
    [
        ({"type": "tumbling", "size": "60s"}, 125_000, 180_000),
        ({"type": "hopping", "size": "60s", "advance": "20s"}, 125_000, 180_000),
        ({"type": "session", "gap": "30s"}, 125_000, 155_000),
    ],
)
def test_late_window_end_per_window_type(window: dict[str, str], time: int, end: int) -> None:
    [spec] = parse_rules(
        [
            {
                "name": "r",
                "kind": "threshold",
                "group_by": ["source"],
                "window": window,
                "aggregate": "count",
                "when": ">= 1",
            }
        ]
    )
    rule = compile_rule(spec)
    assert late_window_end(rule, time) == end


def test_demo_summary_counts_late_events_apart_from_the_dlq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream.demo import Demo, DemoOptions
    from stream.observability.scrape import Sample

    monkeypatch.delenv("STREAM_TOPICS__LATE", raising=False)
    monkeypatch.delenv("STREAM_TOPICS__INPUT", raising=False)
    demo = Demo(DemoOptions(0, 100, 1, 4, 0.02, 9092, 6066))
    sample = Sample(
        {
            ("stream_events_consumed_total", ()): 100.0,
            ("stream_dlq_records_total", (("stage", "validate"),)): 2.0,
            ("stream_events_produced_total", (("topic", "events.late"),)): 7.0,
        }
    )
    line = demo._line(sample, 0.0)
    assert "dlq        2" in line and "late      7" in line
