"""What every format decoder shares: the protocol, the reject reasons, the wire framing."""

from __future__ import annotations

import base64
import decimal
from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol

from stream.stages import Reject

Format = Literal["json", "avro", "protobuf", "json_schema"]
FORMATS: Final[tuple[Format, ...]] = ("json", "avro", "protobuf", "json_schema")

#: The value does not start with the Confluent wire header (magic byte 0 + 4-byte schema id).
BAD_FRAMING: Final = "bad_framing"
#: The header names a schema id the registry does not know.
UNKNOWN_SCHEMA: Final = "unknown_schema"
#: The header is fine and the schema known, but the payload does not decode with it
#: (truncated or corrupt bytes, or a json_schema payload that violates its writer schema).
UNDECODABLE: Final = "undecodable"

MAGIC_BYTE: Final = 0
HEADER_SIZE: Final = 5  # magic byte + big-endian int32 schema id


class FormatDecoder(Protocol):
    """Turns a batch of raw record values into JSON bytes the JSON validation path reads.

    ``decode_batch`` returns one entry per input position — the record as JSON bytes, or
    ``None`` where it was rejected (or where the value itself was ``None``, a tombstone,
    which is passed through without a reject) — and the rejects, each with ``error_class``
    one of :data:`BAD_FRAMING`, :data:`UNKNOWN_SCHEMA`, :data:`UNDECODABLE`.

    Raises :class:`stream.errors.TransientError` when the registry cannot be reached (the
    caller pauses and retries the same batch; such records never go to the DLQ) and
    :class:`stream.errors.ConfigError` when it refuses our credentials.
    """

    format: Format

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]: ...


class JsonDecoder:
    """``json``: the values already are JSON; nothing to do (identity, no copy)."""

    format: Format = "json"

    def decode_batch(
        self, topic: str, values: Sequence[bytes | None]
    ) -> tuple[list[bytes | None], list[Reject]]:
        return list(values), []


def framing_problem(value: bytes) -> str | None:
    """Why ``value`` is not Confluent-framed, or ``None`` if its header looks right."""
    if len(value) <= HEADER_SIZE:
        return (
            f"value of {len(value)} bytes is too short for the schema-registry wire format "
            f"(magic byte 0, 4-byte schema id, payload)"
        )
    if value[0] != MAGIC_BYTE:
        return (
            f"value starts with byte 0x{value[0]:02x}, not the schema-registry magic byte 0x00 "
            f"(was it produced without a schema-registry serializer?)"
        )
    return None


def schema_id_of(value: bytes) -> int:
    return int.from_bytes(value[1:HEADER_SIZE], "big")


def json_default(obj: Any) -> Any:
    """orjson fallback for the Avro types JSON has no form for.

    ``bytes``/``fixed`` become base64 text, ``decimal`` logical values their exact decimal
    string; dates, times, timestamps and UUIDs are handled by orjson itself (RFC 3339 text).
    """
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
