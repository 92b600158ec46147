"""Which link has been running too long (what /health names), with a controlled clock."""

from __future__ import annotations

from stream.runtime.liveness import Liveness, Stall


def test_the_longest_running_link_past_the_limit_is_the_stall() -> None:
    now = [100.0]
    liveness = Liveness(clock=lambda: now[0])
    assert liveness.stalled(15.0) is None
    with liveness.busy("blocker"):
        now[0] += 5.0
        with liveness.busy("enrich"):
            now[0] += 11.0
            assert liveness.stalled(15.0) == Stall("blocker", 16.0)
            assert liveness.stalled(20.0) is None
        assert liveness.stalled(15.0) == Stall("blocker", 16.0)
    assert liveness.stalled(0.0) is None  # returned: nothing is running


def test_a_link_that_raised_is_not_running_any_more() -> None:
    now = [0.0]
    liveness = Liveness(clock=lambda: now[0])
    try:
        with liveness.busy("blocker"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    now[0] = 60.0
    assert liveness.stalled(15.0) is None
