"""Progress lines on stderr while the benchmark runs: which row, how far, how fast.

On a terminal one line is rewritten in place; in a log (CI, nohup) a line is
printed every few seconds instead, so the log stays short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Console:
    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self._last = 0.0
        self._open_line = False

    def say(self, message: str) -> None:
        if self.quiet:
            return
        self._end_line()
        print(f"bench: {message}", file=self.stream, flush=True)
        self._last = time.monotonic()  # the next progress line comes one interval later

    def progress(self, label: str, done: int, total: int, elapsed: float) -> None:
        """Throttled: every 0.5 s on a terminal, every 5 s otherwise."""
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last < (0.5 if self.tty else 5.0):
            return
        self._last = now
        share = 100.0 * done / total if total else 0.0
        line = f"bench: {label}: {done:,}/{total:,} ({share:.0f}%) after {elapsed:.0f}s"
        if self.tty:
            print(f"\r{line}\033[K", end="", file=self.stream, flush=True)
            self._open_line = True
        else:
            print(line, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._open_line:
            print(file=self.stream)
            self._open_line = False
