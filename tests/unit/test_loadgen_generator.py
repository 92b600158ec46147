"""The load generator: determinism, ground truth, ratios and realism of its records."""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise

import msgspec
import pytest

from stream.errors import ConfigError
from stream.loadgen.generator import (
    BLOCK_SIZE,
    FAR_FUTURE_TIMESTAMP,
    INVALID_KINDS,
    EventGenerator,
    GeneratedRecord,
    GeneratorConfig,
    blocks_for,
    generate,
)
from stream.loadgen.reference import reference_data
from stream.pipelines.observability import event_decoder

N = 10_000


@pytest.fixture(scope="module")
def mixed() -> list[GeneratedRecord]:
    return list(generate(N, seed=7, invalid_ratio=0.1, late_ratio=0.05))


def test_same_seed_same_records_other_seed_other_records() -> None:
    first = list(generate(3000, seed=3, invalid_ratio=0.05, late_ratio=0.02))
    again = list(generate(3000, seed=3, invalid_ratio=0.05, late_ratio=0.02))
    other = list(generate(3000, seed=4, invalid_ratio=0.05, late_ratio=0.02))
    assert first == again
    assert [r.value for r in first] != [r.value for r in other]


def test_processes_slicing_covers_exactly_the_single_process_output() -> None:
    count = 5 * BLOCK_SIZE + 100
    config = GeneratorConfig(seed=11, invalid_ratio=0.05)
    single = [v for blk, size in blocks_for(0, 1, count) for v in _block_values(config, blk, size)]
    sliced: dict[int, list[bytes]] = {}
    for process in range(3):
        generator = EventGenerator(config)
        for blk, size in blocks_for(process, 3, count):
            sliced[blk] = generator.block(blk, size).values
    assert len(single) == count
    assert [v for blk in sorted(sliced) for v in sliced[blk]] == single


def _block_values(config: GeneratorConfig, block_index: int, size: int) -> list[bytes]:
    return EventGenerator(config).block(block_index, size).values


def test_event_ids_are_unique(mixed: list[GeneratedRecord]) -> None:
    assert len({r.event_id for r in mixed}) == N


def test_every_valid_record_decodes_to_its_ground_truth(mixed: list[GeneratedRecord]) -> None:
    valid = [r for r in mixed if r.valid]
    assert len(valid) > 8000
    for record in valid:
        event = event_decoder.decode(record.value)
        assert event.event_id == record.event_id
        assert event.event_time_ms() == record.event_time_ms
        assert record.key == event.source.encode()


def test_every_invalid_record_fails_the_decoder(mixed: list[GeneratedRecord]) -> None:
    far_future_ms = int(time.time() * 1000) + 100 * 365 * 24 * 3600 * 1000
    invalid = [r for r in mixed if not r.valid]
    assert invalid
    for record in invalid:
        assert record.invalid_kind in INVALID_KINDS
        if FAR_FUTURE_TIMESTAMP.encode() in record.value:
            # well-formed but absurd: only an event-time bounds check can reject it
            assert record.invalid_kind == "bad_timestamp"
            assert event_decoder.decode(record.value).event_time_ms() > far_future_ms
            continue
        with pytest.raises(msgspec.DecodeError):  # ValidationError is a DecodeError
            event_decoder.decode(record.value)


def test_invalid_ratio_is_exact_and_kinds_are_even(mixed: list[GeneratedRecord]) -> None:
    kinds = Counter(r.invalid_kind for r in mixed if not r.valid)
    assert abs(sum(kinds.values()) / N - 0.1) <= 0.02
    assert set(kinds) == set(INVALID_KINDS)
    for kind in INVALID_KINDS:
        assert abs(kinds[kind] - N * 0.1 / 5) <= 20, kinds


def test_late_records_are_pushed_back_by_more_than_a_window(mixed: list[GeneratedRecord]) -> None:
    late = [i for i, r in enumerate(mixed) if r.late]
    assert abs(len(late) / N - 0.05) <= 0.01
    on_time = [r.event_time_ms for r in mixed if not r.late]
    for i in late:
        # the neighbours' nominal time minus jitter is still a window ahead of a late record
        assert mixed[i].event_time_ms < max(on_time) - 60_000
    spread = max(on_time) - min(on_time)
    assert spread < N * 1000 // 10_000 + 2_001  # event_rate 10k/s plus at most 2 s of jitter


def test_out_of_order_jitter_is_present(mixed: list[GeneratedRecord]) -> None:
    times = [r.event_time_ms for r in mixed if not r.late]
    decreasing = sum(1 for a, b in pairwise(times) if b < a)
    assert decreasing > len(times) // 4


def test_sources_and_entities_are_zipf_skewed(mixed: list[GeneratedRecord]) -> None:
    sources = Counter(r.key for r in mixed)
    ranked = [count for _, count in sources.most_common()]
    assert sources.most_common(1)[0][0] == b"svc-0"
    assert ranked[0] > 5 * sources[b"svc-20"]
    assert ranked[0] / N > 0.1
    assert len(sources) >= 45  # the tail still shows up
    entities = Counter(
        event_decoder.decode(r.value).entity for r in mixed[:3000] if r.valid and r.late is False
    )
    assert entities.most_common(1)[0][1] > 10 * entities.most_common()[-1][1]


def test_severities_are_mostly_info_and_both_timestamp_forms_appear(
    mixed: list[GeneratedRecord],
) -> None:
    events = [event_decoder.decode(r.value) for r in mixed if r.valid]
    severities = Counter(e.severity for e in events)
    assert severities["info"] / len(events) > 0.6
    assert severities["warning"] > 0
    assert severities["error"] + severities["critical"] > 0
    forms = Counter(type(e.timestamp).__name__ for e in events)
    assert forms["int"] > len(events) // 4
    assert forms["datetime"] > len(events) // 4


def test_error_bursts_make_correlation_rules_fire() -> None:
    records = list(generate(BLOCK_SIZE * 4, seed=5, burst_probability=1.0))
    errors: Counter[tuple[bytes, int]] = Counter()
    for record in records:
        event = event_decoder.decode(record.value)
        if event.severity in ("error", "critical"):
            errors[(record.key, record.event_time_ms // 60_000)] += 1
    assert max(errors.values()) >= 8  # a burst is 8-24 errors from one source


def test_payload_size_pads_records_to_about_the_requested_size() -> None:
    records = list(generate(2000, seed=1, payload_size=1000))
    mean = sum(len(r.value) for r in records) / len(records)
    assert 950 <= mean <= 1050
    assert all(r.valid for r in records)
    event_decoder.decode(records[0].value)


def test_natural_size_is_about_200_bytes() -> None:
    records = list(generate(2000, seed=1))
    assert 150 <= sum(len(r.value) for r in records) / len(records) <= 300


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", -1), ("sources", 0), ("invalid_ratio", 1.5), ("late_ratio", -0.1), ("event_rate", 0)],
)
def test_bad_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        GeneratorConfig(**{field: value})  # type: ignore[arg-type]


def test_reference_data_leaves_one_service_in_ten_unknown() -> None:
    data = reference_data(50)
    assert len(data) == 45
    assert "svc-9" not in data
    assert data["svc-0"]["tier"] in (1, 2, 3)
    assert set(data["svc-1"]) == {"team", "tier", "owner"}
