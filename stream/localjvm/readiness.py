""" "Is it up yet?": the waiting loop around a service's own probe.

Each service knows how a client would see it ready (a Kafka metadata request, a registry's
``GET /subjects``); the loop around that — the deadline, giving up at once when the process
died, the last reason in the timeout message — is the same for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_INTERVAL_S = 0.2


def wait_until_ready(
    probe: Callable[[float], str | None],
    timeout: float,
    *,
    what: str,
    where: str,
    error: type[Exception],
    is_alive: Callable[[], bool] | None = None,
) -> None:
    """Return once ``probe(seconds)`` returns ``None`` (ready); else it returns why not.

    Raises ``error`` ("``what`` at ``where`` did not answer within ...s (last reason)")
    after ``timeout`` s, or ("... exited while starting") as soon as ``is_alive`` says the
    process is gone. ``probe`` gets the seconds it may take and may raise ``error`` itself
    for a failure that waiting cannot fix (rejected credentials).
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if is_alive is not None and not is_alive():
            raise error(f"{what} for {where} exited while starting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error(f"{what} at {where} did not answer within {timeout:g}s ({last})")
        reason = probe(min(remaining, 2.0))
        if reason is None:
            return
        last = reason
        time.sleep(POLL_INTERVAL_S)
