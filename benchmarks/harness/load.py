"""Input for the benchmark, from the project's load generator (``stream.loadgen``).

Records are the generator's realistic ~230-byte JSON events (Zipf sources,
mixed timestamp formats, error bursts) with a fixed seed and 2% contract
violations, so every run of every row sees byte-identical input and the
generator's ground truth says exactly how many must be enriched and how many
dead-lettered. Event time starts at the wall clock, so windows behave as in
production.
"""

from __future__ import annotations

import time
from typing import Final, TextIO

from stream.loadgen.generator import GeneratorConfig, generate
from stream.loadgen.producer import LoadOptions, LoadReport, run_load

#: Event-time rate of pre-produced input (as ``stream loadgen`` when unthrottled).
UNTHROTTLED_EVENT_RATE: Final = 100_000
#: Above this many events one producer process cannot keep the broker busy.
MULTI_PROCESS_FROM: Final = 200_000


def produce(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    seed: int,
    invalid_ratio: float,
    rate: float = 0.0,
    duration: float | None = None,
    progress: TextIO | None = None,
    fmt: str = "json",
    registry_url: str | None = None,
) -> LoadReport:
    """Send ``count`` generated events (at ``rate``/s when given) and wait for acks;
    ``fmt`` other than json frames them for the registry at ``registry_url``."""
    generator = GeneratorConfig(
        seed=seed,
        invalid_ratio=invalid_ratio,
        start_ms=int(time.time() * 1000),
        event_rate=round(rate) or UNTHROTTLED_EVENT_RATE,
    )
    many = count >= MULTI_PROCESS_FROM and (not rate or rate > 100_000)
    options = LoadOptions(
        bootstrap=bootstrap,
        topic=topic,
        count=count,
        duration=duration,
        rate=rate,
        processes=2 if many else 1,
        generator=generator,
        format=fmt,
        registry_url=registry_url,
    )
    return run_load(options, progress_stream=progress)


def average_record_bytes(seed: int, invalid_ratio: float, sample: int = 4096) -> float:
    """Mean value size of the generator's records for this seed."""
    records = list(generate(sample, seed=seed, invalid_ratio=invalid_ratio))
    return sum(len(r.value) for r in records) / len(records)
