"""``stream bench --format avro`` without a broker: where the ``stream-avro`` row runs, the
pipeline file it gets, its option checks, and how its cost is reported beside ``stream``.
(The row end to end: tests/integration/test_bench_smoke.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.formats import FORMAT_ROWS, write_format_pipeline
from benchmarks.harness.orchestrate import BenchOptions, rows_of
from benchmarks.harness.report import comparisons
from benchmarks.harness.rows import ROW_NAMES, Row
from stream.config import load_settings
from stream.errors import ConfigError


def test_the_format_row_runs_right_after_stream_on_observability_only() -> None:
    assert FORMAT_ROWS == {"avro": "stream-avro"}
    with_avro = rows_of("observability", ROW_NAMES, ("avro",))
    assert with_avro[:3] == ("ceiling", "stream", "stream-avro")
    assert len(with_avro) == len(ROW_NAMES) + 1
    assert rows_of("observability", ("ceiling",), ("avro",)) == ("ceiling", "stream-avro")
    assert rows_of("orders", ROW_NAMES, ("avro",)) == ("ceiling", "stream", "stream-eos")
    assert rows_of("observability", ROW_NAMES) == ROW_NAMES


def test_unknown_formats_and_formats_without_observability_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown format xml"):
        BenchOptions(formats=("xml",)).check()
    with pytest.raises(ConfigError, match="observability workload"):
        BenchOptions(formats=("avro",), workloads=("orders",)).check()
    BenchOptions(formats=("avro",)).check()


def test_the_avro_row_runs_the_bundled_pipeline_reading_avro(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/apis/ccompat/v7"
    path = write_format_pipeline(tmp_path / "row.yaml", "avro", url)
    settings = load_settings(path)
    assert (settings.format, settings.output_format) == ("avro", "json")
    assert settings.schema_registry.url == url
    # layered on the bundled pipeline: its schema, join and rule, as the stream row has
    assert settings.schema_file and settings.schema_file.endswith("observability.schema.json")
    assert [j.name for j in settings.joins] == ["service"]
    assert [r.name for r in settings.correlate.rules] == ["error-burst"]


def test_the_avro_row_is_compared_with_stream_by_cpu() -> None:
    rows = [
        Row("stream", 1000, events_per_s=100_000, cpu_seconds_per_million=10.0),
        Row("stream-avro", 1000, events_per_s=50_000, cpu_seconds_per_million=25.0),
    ]
    (found,) = comparisons(rows)
    assert found["row"] == "stream-avro" and found["workload"] == "observability"
    assert found["percent_of_stream_by_cpu"] == 40.0 and found["target_percent"] is None
    assert "CPU s/M 25.0 vs 10.0" in found["text"]
