"""RFC 3339 event times to epoch milliseconds, memoised per (second, UTC offset).

Half the bench's events carry a string time such as ``2026-12-02T18:57:00.123+05:30``;
``datetime.fromisoformat(s).timestamp()`` on each of them (plus the type checks
around it) was 6.5% of the worker's main thread (py-spy, 2026-12-02): the aware
``timestamp()`` is the expensive part. Events of one batch fall in a few seconds
and a few UTC offsets, so the common shape — ``YYYY-MM-DDTHH:MM:SS``, optionally
``.fff`` (exactly three digits), then ``Z`` or ``±HH:MM`` — is looked up by its
second and offset (the string without the fraction), parsed once by
``fromisoformat`` and remembered. Any other shape takes the reference path
(:func:`reference_ms`), so what is accepted is unchanged, and the value is the
same float arithmetic as ``int(datetime.timestamp() * 1000)`` for an aware time:
``int(total_µs / 10**6 * 1000)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The memo is cleared when it reaches this many (second, offset) entries.
MEMO_MAX: Final = 100_000
#: What the memo holds: whole seconds, and an offset ``fromisoformat`` reads the same alone.
_SHAPE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})\Z", re.ASCII)
_MISSING: Final[object] = object()


def reference_ms(value: str) -> int | None:
    """Epoch ms of any string ``datetime.fromisoformat`` accepts with a UTC offset."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(parsed.timestamp() * 1000) if parsed.tzinfo is not None else None


def _seconds(key: str) -> int | None:
    """Epoch seconds of a fraction-less time of the memoised shape; None otherwise."""
    if not _SHAPE.match(key):
        return None
    try:
        delta = datetime.fromisoformat(key) - _EPOCH
    except ValueError:
        return None
    return delta.days * 86_400 + delta.seconds


def rfc3339_ms() -> Callable[[str], int | None]:
    """A converter with its own memo (one per validator; not thread-safe, like the stage)."""
    memo: dict[str, int | None] = {}

    def to_ms(value: str) -> int | None:
        n = len(value)
        if n < 20 or value[10] != "T":
            return reference_ms(value)
        if value[19] == ".":
            fraction = value[20:23]
            if n < 24 or not (fraction.isascii() and fraction.isdigit()):
                return reference_ms(value)
            micros = int(fraction) * 1000
            key = value[:19] + value[23:]
        else:
            micros = 0
            key = value
        seconds = memo.get(key, _MISSING)
        if seconds is _MISSING:
            if len(memo) >= MEMO_MAX:
                memo.clear()
            seconds = memo[key] = _seconds(key)
        if seconds is None:
            return reference_ms(value)
        return int((seconds * 1_000_000 + micros) / 10**6 * 1000)  # type: ignore[operator]

    return to_ms
