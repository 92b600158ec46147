"""Dead-letter writer: the original record plus headers saying what went wrong.

The original key, value, timestamp and headers are kept byte for byte so a
fixed record can be replayed (``stream dlq replay``) exactly as it was sent.
"""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

from stream.kafka import headers as h
from stream.kafka.producer import OutputProducer

#: Longer error messages are cut so one poison record cannot make a huge DLQ record.
MAX_MESSAGE_BYTES = 1024


class DlqWriter:
    def __init__(
        self,
        producer: OutputProducer,
        topic: str,
        extra_headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._producer = producer
        self.topic = topic
        #: Added to every DLQ record (the pipeline's lineage headers).
        self._extra = list(extra_headers or [])

    def write(
        self,
        record: Message,
        *,
        stage: str,
        error_class: str,
        message: str,
        attempts: int = 1,
        failed_at: datetime | None = None,
    ) -> None:
        when = (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
        original = record.headers() or []
        extra = [
            (h.DLQ_ORIGINAL_TOPIC, (record.topic() or "").encode()),
            (h.DLQ_ORIGINAL_PARTITION, str(record.partition()).encode()),
            (h.DLQ_ORIGINAL_OFFSET, str(record.offset()).encode()),
            (h.DLQ_ERROR_CLASS, error_class.encode()),
            (h.DLQ_ERROR_MESSAGE, message.encode()[:MAX_MESSAGE_BYTES]),
            (h.DLQ_STAGE, stage.encode()),
            (h.DLQ_ATTEMPTS, str(attempts).encode()),
            (h.DLQ_FAILED_AT, when.encode()),
        ]
        _, timestamp = record.timestamp()
        self._producer.produce(
            self.topic,
            record.value(),
            record.key(),
            headers=[*original, *extra, *self._extra],
            timestamp=max(timestamp, 0),
        )
