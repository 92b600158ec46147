"""The running progress line of ``stream loadgen`` (stderr).

On a terminal it is one line redrawn every second; in a log (CI, ``kubectl
logs``) it is a plain line every few seconds, so the output stays readable
either way.
"""

from __future__ import annotations

import time
from typing import TextIO


def format_progress(
    sent: int,
    acked: int,
    failed: int,
    rate: float,
    elapsed: float,
    eta: float | None,
) -> str:
    eta_text = f"  ETA {eta:,.0f}s" if eta is not None else ""
    return (
        f"loadgen: sent {sent:,}  acked {acked:,}  failed {failed:,}  "
        f"{rate:,.0f} events/s  {elapsed:,.1f}s{eta_text}"
    )


class Progress:
    """Prints the progress line at most every ``interval`` seconds."""

    def __init__(
        self,
        stream: TextIO,
        *,
        count: int | None,
        duration: float | None,
        enabled: bool = True,
        interval: float | None = None,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._count = count
        self._duration = duration
        self._enabled = enabled
        self._interval = interval if interval is not None else (1.0 if self._tty else 5.0)
        self._last_time = time.monotonic()
        self._last_sent = 0
        self._drawn = False

    def restart(self) -> None:
        """Measure the rate from now (sending starts after the producers are set up)."""
        self._last_time = time.monotonic()
        self._last_sent = 0

    def due(self) -> bool:
        return self._enabled and time.monotonic() - self._last_time >= self._interval

    def update(self, sent: int, acked: int, failed: int, elapsed: float) -> None:
        """Print the line if it is due; the rate is over the last interval."""
        if not self.due():
            return
        now = time.monotonic()
        rate = (sent - self._last_sent) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_sent = now, sent
        eta: float | None = None
        if self._count is not None and rate > 0:
            eta = max(0.0, (self._count - sent) / rate)
        if self._duration is not None:
            left = max(0.0, self._duration - elapsed)
            eta = left if eta is None else min(eta, left)
        line = format_progress(sent, acked, failed, rate, elapsed, eta)
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the redrawn line so the final report starts on its own line."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
