"""Changelog record encoding of window state (msgpack via msgspec).

Keys are msgpack arrays so they sort and compact per logical entry:

* ``["", "clock"]`` — the partition's watermark, max event time, sequence number;
* ``[rule, fingerprint, tag, *parts]`` — one entry of one rule's state, where
  ``tag`` is ``"w"`` (window aggregate: parts = window start, group key),
  ``"s"`` (a group's sessions), ``"q"`` (a group's sequence state) or ``"b"``
  (a group's anomaly baseline).

The rule's fingerprint (a hash of its spec) is part of every key: after a rule
is edited, entries written under the old definition are not restored into the
new one; they are tombstoned instead. A msgpack array never starts with byte
``0x00``, so these keys cannot collide with the runner's own changelog keys.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

import msgspec

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder()

CLOCK_KEY: Final = _encoder.encode(("", "clock"))

TAG_WINDOW: Final = "w"
TAG_SESSIONS: Final = "s"
TAG_SEQUENCE: Final = "q"
TAG_BASELINE: Final = "b"

#: Entries of one drain, de-duplicated: the last value per key wins.
Changes = dict[bytes, bytes | None]


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(raw: bytes) -> Any:
    return _decoder.decode(raw)


def entry_key(rule: str, fingerprint: str, tag: str, *parts: Any) -> bytes:
    return _encoder.encode((rule, fingerprint, tag, *parts))


def group_key(raw: Any) -> Hashable:
    """A group key as decoded from msgpack (lists back to tuples)."""
    return tuple(raw) if isinstance(raw, list) else raw
