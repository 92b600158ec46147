"""Who leads the KRaft controller quorum, and who votes: one ``DescribeQuorum`` request.

confluent-kafka has no ``describeMetadataQuorum`` and the Kafka jars we fetch do not
include the ``kafka-metadata-quorum`` tool, so this speaks the one request it needs
(``DescribeQuorum`` v0, API key 55, KIP-595) directly over a socket: a few bytes
and milliseconds, no JVM. The request goes to the controller listeners; only the
active controller answers without error (the others say ``NOT_LEADER_OR_FOLLOWER``),
which also tells us which node is active.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

_API_KEY = 55  # DescribeQuorum
_API_VERSION = 0
_METADATA_TOPIC = "__cluster_metadata"
_CLIENT_ID = b"stream-localbroker"


@dataclass(frozen=True)
class QuorumState:
    """The controller quorum as its leader sees it."""

    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: dict[int, int]  # voter id -> its metadata log end offset
    observers: dict[int, int]


def describe_quorum(
    controllers: Iterable[tuple[str, int]], timeout: float = 1.0
) -> QuorumState | None:
    """Ask each controller ``(host, port)`` in turn; the active one's answer, or None."""
    for host, port in controllers:
        try:
            state = _ask(host, port, timeout)
        except (OSError, ValueError, struct.error):
            continue
        if state is not None:
            return state
    return None


def _ask(host: str, port: int, timeout: float) -> QuorumState | None:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_request(correlation_id=1))
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        return _parse(_read_exactly(sock, size))


def _request(correlation_id: int) -> bytes:
    header = struct.pack(">hhih", _API_KEY, _API_VERSION, correlation_id, len(_CLIENT_ID))
    header += _CLIENT_ID + _uvarint(0)  # request header v2: no tagged fields
    name = _METADATA_TOPIC.encode()
    body = (
        _uvarint(2)  # one topic (compact arrays store length + 1)
        + _uvarint(len(name) + 1)
        + name
        + _uvarint(2)  # one partition
        + struct.pack(">i", 0)
        + _uvarint(0)  # partition tagged fields
        + _uvarint(0)  # topic tagged fields
        + _uvarint(0)  # body tagged fields
    )
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ValueError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def compact_string(self) -> str:
        length = self.uvarint() - 1
        text = self.data[self.pos : self.pos + max(length, 0)].decode()
        self.pos += max(length, 0)
        return text

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.pos += self.uvarint()  # size, then skip the value

    def replicas(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for _ in range(self.uvarint() - 1):
            replica = self.take(">i")
            found[replica] = self.take(">q")
            self.skip_tags()
        return found


def _parse(response: bytes) -> QuorumState | None:
    """A DescribeQuorum v0 response (response header v1); None if it carries an error."""
    reader = _Reader(response)
    reader.take(">i")  # correlation id
    reader.skip_tags()
    if reader.take(">h") != 0:
        return None
    for _ in range(reader.uvarint() - 1):
        reader.compact_string()
        for _ in range(reader.uvarint() - 1):
            reader.take(">i")  # partition index
            error = reader.take(">h")
            leader_id = reader.take(">i")
            leader_epoch = reader.take(">i")
            high_watermark = reader.take(">q")
            voters = reader.replicas()
            observers = reader.replicas()
            reader.skip_tags()
            if error != 0 or leader_id < 0:
                return None
            return QuorumState(leader_id, leader_epoch, high_watermark, voters, observers)
    return None
