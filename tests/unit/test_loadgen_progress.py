"""Progress line and final report of ``stream loadgen`` (formatting only, no Kafka)."""

from __future__ import annotations

import io
import json

import pytest

from stream.errors import ConfigError
from stream.loadgen.producer import LoadOptions, LoadReport
from stream.loadgen.progress import Progress, format_progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_shows_counts_rate_and_eta() -> None:
    line = format_progress(1_234_567, 1_230_000, 3, 301_234.4, 4.12, 12.4)
    assert line == (
        "loadgen: sent 1,234,567  acked 1,230,000  failed 3  301,234 events/s  4.1s  ETA 12s"
    )


def test_on_a_terminal_the_line_is_redrawn_and_ended_once() -> None:
    out = _Tty()
    progress = Progress(out, count=1000, duration=None, interval=0.0)
    progress.update(100, 90, 0, 1.0)
    progress.update(200, 190, 0, 2.0)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r") == 2
    assert text.endswith("\n")
    assert text.count("\n") == 1


def test_in_a_log_each_update_is_its_own_line() -> None:
    out = io.StringIO()
    progress = Progress(out, count=None, duration=10.0, interval=0.0)
    progress.update(100, 90, 0, 1.0)
    progress.update(200, 190, 0, 2.0)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\r" not in out.getvalue()
    assert lines[1].endswith("ETA 8s")


def test_disabled_progress_prints_nothing() -> None:
    out = io.StringIO()
    progress = Progress(out, count=10, duration=None, enabled=False, interval=0.0)
    progress.update(1, 1, 0, 1.0)
    progress.finish()
    assert out.getvalue() == ""


def test_report_rate_json_and_success() -> None:
    report = LoadReport("events", 1000, 1000, 0, 20, 5, 2.0, 2, 500.0)
    assert report.ok
    assert report.events_per_s == 500.0
    data = json.loads(json.dumps(report.as_dict()))
    assert data["acknowledged"] == 1000
    assert data["events_per_s"] == 500.0
    assert "1,000" in report.summary()
    failed = LoadReport("events", 1000, 990, 10, 0, 0, 2.0, 1, 0.0, "Local: Message timed out")
    assert not failed.ok
    assert "Message timed out" in failed.summary()


def test_options_need_a_count_or_a_duration() -> None:
    with pytest.raises(ConfigError, match="count/duration"):
        LoadOptions(bootstrap="localhost:9092")
    with pytest.raises(ConfigError, match="processes"):
        LoadOptions(bootstrap="localhost:9092", count=1, processes=0)
