"""Reading a file in chunks that end on a record boundary, with the byte offset of each end.

Line-based sources (CSV, NDJSON) read ~1 MB at a time instead of line by
line: one ``read`` and one split per chunk is far cheaper than a Python
iteration per line, and the end offset of every chunk is an exact place to
resume from after an interruption (``file.tell()`` is not available while
iterating a text file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO, Final

#: Bytes read per chunk: ~10k rows of ~100 bytes, so no checkpoint waits on a huge chunk.
CHUNK_BYTES: Final = 1 << 20

Boundary = Callable[[bytes], int]


def line_boundary(buf: bytes) -> int:
    """Index just past the last newline of ``buf``, or -1 (in NDJSON every newline ends a row)."""
    pos = buf.rfind(b"\n")
    return pos + 1 if pos >= 0 else -1


def csv_record_boundary(buf: bytes) -> int:
    """Index just past the last newline of ``buf`` that ends a CSV record, or -1.

    A newline ends a record when an even number of quote characters precede it
    (CSV doubles quotes inside quoted fields, so parity tells inside from
    outside). ``buf`` must start at a record boundary.
    """
    pos = buf.rfind(b"\n")
    if pos < 0:
        return -1
    quotes = buf.count(b'"', 0, pos)
    while quotes % 2:
        previous = buf.rfind(b"\n", 0, pos)
        if previous < 0:
            return -1
        quotes -= buf.count(b'"', previous, pos)
        pos = previous
    return pos + 1


def read_chunks(
    file: BinaryIO, start: int, boundary: Boundary, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[bytes, int]]:
    """Yield ``(chunk, end_offset)``: whole records from byte ``start``, ~``chunk_bytes`` each.

    The last chunk may lack a final newline (a file that does not end with one).
    """
    file.seek(start)
    offset = start
    pending = b""
    while True:
        data = file.read(chunk_bytes)
        if not data:
            if pending:
                yield pending, offset + len(pending)
            return
        pending += data
        cut = boundary(pending)
        if cut < 0:
            continue
        chunk, pending = pending[:cut], pending[cut:]
        offset += len(chunk)
        yield chunk, offset
