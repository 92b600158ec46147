"""Capacity planning arithmetic (stream.planning) and the `stream plan` command."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from stream.commands import plan as plan_command
from stream.planning import (
    DEFAULT_PER_WORKER_RATE,
    PlanInputs,
    PlanningError,
    make_plan,
    per_worker_rate_from_results,
    scale_down_tolerance,
    scaled_object,
    smallest_divisible_count,
)


def test_prod_sizing_from_measured_rate() -> None:
    # 50k/s per worker at 30 % headroom = 35k usable; 200k/s needs ceil(5.71) = 6 workers,
    # twice the rate needs ceil(11.43) = 12, and 12 is a highly divisible partition count.
    plan = make_plan(PlanInputs(target_rate=200_000, per_worker_rate=50_000, headroom=0.3))
    assert plan.usable_rate_per_worker == pytest.approx(35_000)
    assert plan.replicas_needed == 6
    assert (plan.min_replicas, plan.max_replicas, plan.partitions) == (6, 12, 12)
    assert plan.lag_budget_per_replica == 500_000  # 10 s of one worker's work
    assert plan.lag_threshold == 400_000  # 80 % of the budget
    assert plan.scale_down_lag == 100_000  # 20 % of the budget
    assert plan.max_sustainable_rate == pytest.approx(420_000)
    assert plan.warnings == ()


def test_small_target_keeps_the_availability_floor() -> None:
    plan = make_plan(PlanInputs(target_rate=1_000, per_worker_rate=50_000))
    assert plan.replicas_needed == 1
    assert (plan.min_replicas, plan.max_replicas, plan.partitions) == (2, 2, 2)


def test_dev_sizing() -> None:
    plan = make_plan(PlanInputs(target_rate=50_000, per_worker_rate=50_000, headroom=0.3))
    assert (plan.replicas_needed, plan.min_replicas, plan.max_replicas) == (2, 2, 3)
    assert plan.partitions == 3


def test_existing_topic_caps_max_replicas_and_warns() -> None:
    plan = make_plan(
        PlanInputs(target_rate=200_000, per_worker_rate=50_000, headroom=0.3, partitions=8)
    )
    assert (plan.min_replicas, plan.max_replicas, plan.partitions) == (6, 8, 8)
    assert len(plan.warnings) == 1
    assert plan.warnings[0].startswith("replicas would exceed partitions (12 > 8)")
    assert "maxReplicaCount capped at 8" in plan.warnings[0]


def test_existing_topic_too_small_for_the_target_rate() -> None:
    plan = make_plan(
        PlanInputs(target_rate=200_000, per_worker_rate=50_000, headroom=0.3, partitions=4)
    )
    assert (plan.min_replicas, plan.max_replicas) == (4, 4)
    assert plan.warnings[0].startswith("the target rate needs 6 replicas")
    assert "at most 140,000 events/s" in plan.warnings[0]
    assert "minReplicaCount capped at 4" in plan.warnings[1]


def test_never_more_replicas_than_partitions() -> None:
    for rate in (1, 999, 35_000, 70_001, 1_000_000, 9_000_000):
        for partitions in (None, 1, 3, 12, 64):
            plan = make_plan(
                PlanInputs(target_rate=rate, per_worker_rate=40_000, partitions=partitions)
            )
            assert 1 <= plan.min_replicas <= plan.max_replicas <= plan.partitions
            if partitions is not None:
                assert plan.partitions == partitions


@pytest.mark.parametrize(
    ("need", "count"),
    [(1, 1), (5, 6), (7, 8), (12, 12), (13, 16), (100, 128), (256, 256), (257, 384)],
)
def test_smallest_divisible_count(need: int, count: int) -> None:
    assert smallest_divisible_count(need) == count


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target_rate", 0, "--target-rate must be > 0"),
        ("per_worker_rate", -5, "--per-worker-rate must be > 0"),
        ("headroom", 1.0, "--headroom must be in [0, 1)"),
        ("burst_factor", 0.5, "--burst-factor must be >= 1"),
        ("max_lag_seconds", 0, "--max-lag-seconds must be > 0"),
        ("min_replicas_floor", 0, "--min-replicas must be >= 1"),
        ("partitions", 0, "--partitions must be >= 1"),
    ],
)
def test_bad_inputs_are_refused(field: str, value: float, message: str) -> None:
    values: dict[str, float] = {"target_rate": 1000, field: value}
    with pytest.raises(PlanningError, match=re.escape(message)):
        make_plan(PlanInputs(**values))  # type: ignore[arg-type]


def test_scale_down_tolerance_is_the_80_20_band() -> None:
    assert scale_down_tolerance() == 0.75


def test_scaled_object_carries_the_plan() -> None:
    plan = make_plan(PlanInputs(target_rate=200_000, per_worker_rate=50_000))
    manifest = scaled_object(
        plan,
        name="so",
        deployment="dep",
        bootstrap_servers="k:9092",
        consumer_group="g",
        topic="t",
    )
    spec = manifest["spec"]
    assert manifest["metadata"]["annotations"] == {"stream-processor/input-partitions": "12"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (6, 12)
    assert spec["scaleTargetRef"] == {"name": "dep"}
    trigger = spec["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["lagThreshold"] == "400000"
    meta = trigger["metadata"]
    assert (meta["bootstrapServers"], meta["consumerGroup"], meta["topic"]) == ("k:9092", "g", "t")
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


@pytest.mark.parametrize(
    "document",
    [
        [
            {"system": "faust-per-event", "events_per_s": 9000},
            {"system": "stream", "events_per_s": 81234.5},
        ],
        {"rows": [{"name": "stream", "events_per_s": 81234.5}]},
        {"results": [{"framework": "stream", "events_per_s": 81234.5}]},
        {"stream": {"events_per_s": 81234.5}},
        {"pipeline": "stream", "events_per_s": 81234.5},
    ],
)
def test_per_worker_rate_from_results_shapes(document: object) -> None:
    assert per_worker_rate_from_results(document) == 81234.5


@pytest.mark.parametrize(
    "document",
    [
        [{"system": "quixstreams", "events_per_s": 50000}],
        {"rows": [{"system": "stream", "events_per_s": 0}]},
        {"rows": [{"system": "stream", "events_per_s": True}]},
        {"rows": [{"system": "stream", "events_per_s": "fast"}]},
        "not a table",
        None,
    ],
)
def test_per_worker_rate_from_results_without_our_figure(document: object) -> None:
    assert per_worker_rate_from_results(document) is None


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    plan_command.register(parser.add_subparsers())
    args = parser.parse_args(["plan", *argv])
    result: int = args.func(args)
    return result


def test_command_reads_the_newest_benchmark_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps([{"system": "stream", "events_per_s": 10_000}]))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"rows": [{"system": "stream", "events_per_s": 70_000}]}))
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    assert _run(["--target-rate", "98000", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"measured, {new}" in out
    # 70k * 0.7 = 49k usable: 2 needed, 4 for 2x bursts, 4 partitions.
    assert "partitions                        4" in out
    assert "maxReplicaCount                   4" in out
    assert "lagThreshold                 560000" in out


def test_command_falls_back_to_the_documented_constant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    assert _run(["--target-rate", "1000", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    expected = f"{DEFAULT_PER_WORKER_RATE:>12,.0f} events/s  (default; no benchmark result found)"
    assert expected in out


def test_command_warns_and_prints_the_scaledobject(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    argv = ["--target-rate", "200000", "--per-worker-rate", "50000", "--partitions", "8"]
    assert _run([*argv, "--print-scaledobject", "--topic", "orders"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: replicas would exceed partitions (12 > 8)")
    manifest = yaml.safe_load(captured.out.split("---\n", 1)[1])
    assert manifest["spec"]["maxReplicaCount"] == 8
    assert manifest["spec"]["triggers"][0]["metadata"]["topic"] == "orders"


def test_command_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--target-rate", "1000", "--per-worker-rate", "1", "--headroom", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err == "stream plan: error: --headroom must be in [0, 1), got 1.5\n"
