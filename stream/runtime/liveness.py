"""Liveness: which link of the chain is running, and for how long.

A Kafka consumer that stops polling is thrown out of its group after
``max.poll.interval.ms``; here the symptom is a link that never returns — a user
stage or a lookup blocked in a call without a timeout. Async user stages have their
own timeout (:mod:`stream.runtime.user_steps`), but nothing can interrupt a plain
function blocking its thread. So the links that may block run in a worker thread
(the event loop keeps serving ``/health``), each inside :meth:`Liveness.busy`, and
``/health`` turns 503 ``stalled`` naming the link once one has been running for
longer than the stall limit; the Kubernetes liveness probe then restarts the pod and
the group replays from the last commit.
"""

from __future__ import annotations

import faulthandler
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple


class Stall(NamedTuple):
    """A link running for longer than the limit."""

    stage: str
    seconds: float


class Liveness:
    """Start times of the links running now (used on the event-loop thread only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._running: dict[str, float] = {}

    @contextmanager
    def busy(self, stage: str) -> Iterator[None]:
        self._running[stage] = self._clock()
        try:
            yield
        finally:
            self._running.pop(stage, None)

    def stalled(self, limit: float) -> Stall | None:
        """The link running longest, if that is longer than ``limit`` seconds."""
        if not self._running:
            return None
        stage, since = min(self._running.items(), key=lambda item: item[1])
        seconds = self._clock() - since
        return Stall(stage, seconds) if seconds > limit else None


class StackWatchdog:
    """Every thread's stack to stderr, once, when the poll loop stays silent too long.

    ``/health`` says *that* the worker is stuck; this says *where*: a stall with no
    log line (a client call that never returns under the runner lock, a link awaiting
    forever) leaves its stacks in the log before the liveness probe restarts the pod.
    It is :func:`faulthandler.dump_traceback_later` on its own C thread, so it also
    fires when the event loop itself is blocked. The poll loop re-arms it at most once
    a second (a re-arm restarts the countdown).
    """

    def __init__(self, after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self._clock = clock
        self._armed = float("-inf")

    def rearm(self) -> None:
        now = self._clock()
        if now - self._armed >= 1.0:
            self._armed = now
            faulthandler.dump_traceback_later(self.after, repeat=False)

    def cancel(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self._armed = float("-inf")
