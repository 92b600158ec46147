"""Progress display on stderr for long-running connector commands.

On a terminal: one line redrawn in place a few times a second, with a bar
when the total is known (``ingest``). In a log (CI, ``kubectl logs``, a pipe):
a plain line every few seconds, no carriage returns or escape codes, so the
log stays readable. Disabled entirely with ``--quiet``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def ingest_line(
    rows: int, rejected: int, done_bytes: int, total_bytes: int, elapsed: float, tty: bool
) -> str:
    """E.g. ``[####----]  45%  1,234 rows (12 rejected)  1.2 MB/2.6 MB  15,301 rows/s  ETA 3s``."""
    rate = rows / elapsed if elapsed > 0 else 0.0
    fraction = min(1.0, done_bytes / total_bytes) if total_bytes else 0.0
    eta = ""
    if 0 < fraction < 1 and elapsed > 0:
        eta = f"  ETA {human_duration(elapsed * (1 - fraction) / fraction)}"
    bar = ""
    if tty:
        filled = int(fraction * BAR_WIDTH)
        bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "] "
    return (
        f"{bar}{fraction * 100:3.0f}%  {rows:,} rows ({rejected:,} rejected)  "
        f"{human_bytes(done_bytes)}/{human_bytes(total_bytes)}  {rate:,.0f} rows/s{eta}"
    )


class ProgressLine:
    """Prints a status line at most every ``interval`` seconds (redrawn on a TTY)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool = True,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._enabled = enabled
        self._interval = interval if interval is not None else (0.25 if self._tty else 5.0)
        self._clock = clock
        self._last = clock()
        self._drawn = False

    @property
    def tty(self) -> bool:
        return self._tty

    def due(self) -> bool:
        return self._enabled and self._clock() - self._last >= self._interval

    def show(self, line: str, *, force: bool = False) -> None:
        """Print ``line`` if it is due (or ``force``)."""
        if not self._enabled or not (force or self.due()):
            return
        self._last = self._clock()
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """End a redrawn line so what follows starts on its own line."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
