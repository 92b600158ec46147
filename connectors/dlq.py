"""Dead-letter records for rows that never were Kafka records (file ingest).

Same header format as :mod:`stream.kafka.dlq` so ``stream dlq inspect`` and
``replay`` treat them like any other DLQ record: ``dlq.original.topic`` is the
topic the row was meant for, ``dlq.original.partition`` and ``.offset`` are
``-1`` (it never reached Kafka), and the stage is ``ingest``. Extra headers say
where the row came from: ``dlq.source.file`` and ``dlq.source.line`` (CSV,
NDJSON) or ``dlq.source.record`` (1-based row number in JSON arrays and
Parquet). ``replay`` drops every ``dlq.*`` header, these included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from stream.kafka import headers as h
from stream.kafka.dlq import MAX_MESSAGE_BYTES

SOURCE_FILE: Final = "dlq.source.file"
SOURCE_LINE: Final = "dlq.source.line"
SOURCE_RECORD: Final = "dlq.source.record"
INGEST_STAGE: Final = "ingest"
_NEVER_IN_KAFKA: Final = b"-1"


def ingest_dlq_headers(
    *,
    target_topic: str,
    error_class: str,
    message: str,
    source_file: str,
    line: int | None = None,
    record: int | None = None,
    failed_at: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The ``dlq.*`` headers for one rejected row of ``source_file``."""
    when = (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    headers = [
        (h.DLQ_ORIGINAL_TOPIC, target_topic.encode()),
        (h.DLQ_ORIGINAL_PARTITION, _NEVER_IN_KAFKA),
        (h.DLQ_ORIGINAL_OFFSET, _NEVER_IN_KAFKA),
        (h.DLQ_ERROR_CLASS, error_class.encode()),
        (h.DLQ_ERROR_MESSAGE, message.encode()[:MAX_MESSAGE_BYTES]),
        (h.DLQ_STAGE, INGEST_STAGE.encode()),
        (h.DLQ_ATTEMPTS, b"1"),
        (h.DLQ_FAILED_AT, when.encode()),
        (SOURCE_FILE, source_file.encode()),
    ]
    if line is not None:
        headers.append((SOURCE_LINE, str(line).encode()))
    if record is not None:
        headers.append((SOURCE_RECORD, str(record).encode()))
    return headers
