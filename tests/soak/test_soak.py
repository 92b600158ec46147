"""The soak run in small: two minutes of steady load with ever more distinct group keys.

``make soak`` runs the real thing (:mod:`tests.soak.driver`: 30 minutes at half the
measured capacity, keys growing to 1M). This version keeps the shape at a rate shared CI
machines sustain and asserts what must hold at any length: RSS growth after the warm-up
bounded (window state is capped by ``max_keys``, and the cap is reached), file descriptors
and threads constant, lag bounded under load and back to 0 once the load stops, and no
late events with a 5 s idle timeout (batches queued in the worker keep a partition busy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.driver import run_soak, summary, verdicts, write_outputs

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(420)]

RATE = 3_000
SECONDS = 120.0


def test_two_minute_soak(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = run_soak(
        kafka_bootstrap,
        tmp_path,
        seconds=SECONDS,
        rate=RATE,
        keys=200_000,
        max_keys=8_000,
        sample_every=2.0,
    )
    verdicts(result, max_rss_growth_mb=40.0, max_lag=RATE * 10)
    write_outputs(result, tmp_path / "out")
    print("\n" + summary(result))
    assert result.passed, summary(result)
    assert max(s.cap_hits for s in result.samples) > 0, "the key space outgrew max_keys"
