"""Output producer: batched, acknowledged before offsets are committed.

In ``at_least_once`` mode every record is counted into an acknowledgement
*epoch* (:class:`AckEpoch`) through its delivery report; the checkpoint
coordinator seals an epoch at each checkpoint and commits that checkpoint's
offsets once the epoch (and every earlier one) is fully acknowledged, while the
batch loop goes on producing into the next epoch — a checkpoint never stops
processing to wait for the broker (a blocking ``flush()`` made the latency
tail). The report costs one small callback per record (~0.2 µs). In
``exactly_once`` mode the same producer is transactional, offsets travel inside
the transaction, and only failures are reported (``delivery.report.only.error``).

Errors are classified for the checkpoint coordinator, which decides what to do:

* records not yet acknowledged when ``flush`` times out, or a retriable
  transaction error (coordinator moved, request timed out) →
  :class:`~stream.errors.TransientError`: try again later, nothing is lost
  (librdkafka keeps retrying queued records until ``message.timeout.ms``);
* a transaction error that requires an abort (e.g. the group rebalanced under
  it) → the transaction is aborted and :class:`TransactionAbortedError` raised:
  its outputs are gone, so the caller rewinds to the last commit;
* a record that failed delivery for good → :class:`~stream.errors.CheckpointError`;
  a fenced or otherwise fatal producer → :class:`~stream.errors.FatalError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from stream.errors import CheckpointError, FatalError, StreamError, TransientError
from stream.kafka.client import client_config
from stream.resilience.retry import RetryExhausted, RetryPolicy, retry_call

log = logging.getLogger(__name__)

#: Throughput-oriented defaults; anything here can be overridden through ``Settings.kafka``.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "acks": "all",
    "enable.idempotence": True,
}

#: Kafka Streams' exactly-once default: the transaction of a worker that died (``kill -9``)
#: is aborted by the broker after this long, unblocking ``read_committed`` readers and the
#: changelog restore of the partitions' next owner. Kafka's own default is 60 s.
TRANSACTION_TIMEOUT_MS = 10_000

#: Retries of an abort that timed out; the transaction must end before anything else.
ABORT_RETRY = RetryPolicy(
    initial=0.5, multiplier=2.0, max_delay=5.0, max_attempts=100, total_timeout=120.0
)

_FENCED = frozenset(
    {KafkaError.PRODUCER_FENCED, KafkaError._FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
#: An abort the broker refuses with one of these cannot be retried: the transaction is
#: gone or the producer's state is stale (seen when the transaction coordinator was cut
#: off for longer than transaction.timeout.ms and aborted the transaction itself). A new
#: producer instance's init_transactions fences the old one and ends whatever it left.
_RESET_ON_ABORT = frozenset(
    {KafkaError.INVALID_TXN_STATE, KafkaError.INVALID_PRODUCER_ID_MAPPING, KafkaError._STATE}
)
#: How long an abort that keeps timing out is retried before the producer is replaced
#: instead: the broker aborts a transaction itself after transaction.timeout.ms anyway,
#: and the retries hold the runner (the consumer is not polled meanwhile).
ABORT_GIVE_UP_S = 30.0
ABORT_ONLY_RETRY = RetryPolicy(
    initial=0.5, multiplier=2.0, max_delay=5.0, max_attempts=100, total_timeout=ABORT_GIVE_UP_S
)


class TransactionAbortedError(StreamError):
    """The transaction was aborted and its outputs discarded; rewind to the last commit.

    Not a TransientError: retrying the same call cannot help, the work must be redone.
    """


class ProducerResetNeeded(TransactionAbortedError):
    """The transactional producer cannot go on (its transaction timed out on the broker,
    or it is stuck in an error state): :meth:`OutputProducer.reset`, then rewind."""


class ProducerFencedError(ProducerResetNeeded):
    """Fenced. With a per-process transactional id that only happens when the broker
    timed the transaction out; with a shared one (static membership) a successor owns
    the id now and this worker must stop."""


class AckEpoch:
    """The records produced between two checkpoints, and how many the broker has settled.

    ``ack`` is the records' delivery-report callback (served inside ``poll``/``flush``
    on the caller's thread). A failed record also counts as settled — the failure
    itself poisons the next checkpoint through :meth:`OutputProducer.check_failures`.
    """

    __slots__ = ("_on_failure", "produced", "settled")

    def __init__(self, on_failure: Callable[[KafkaError, Message], None]) -> None:
        self.produced = 0
        self.settled = 0
        self._on_failure = on_failure

    def ack(self, err: KafkaError | None, msg: Message) -> None:
        self.settled += 1
        if err is not None:
            self._on_failure(err, msg)

    @property
    def done(self) -> bool:
        return self.settled >= self.produced

    @property
    def outstanding(self) -> int:
        return self.produced - self.settled


class OutputProducer:
    """Wraps a confluent Producer; counts failed deliveries between checkpoints."""

    def __init__(self, base_conf: dict[str, str], *, transactional_id: str | None = None) -> None:
        overrides: dict[str, Any] = dict(PRODUCER_DEFAULTS)
        overrides.update({k: v for k, v in base_conf.items() if k in PRODUCER_DEFAULTS})
        #: Per-record delivery reports feed acknowledgement epochs (at_least_once only).
        self.tracks_acks = transactional_id is None
        overrides["delivery.report.only.error"] = not self.tracks_acks
        overrides["on_delivery"] = self._on_delivery
        overrides["error_cb"] = self._on_error
        if transactional_id is not None:
            overrides["transactional.id"] = transactional_id
            overrides["transaction.timeout.ms"] = base_conf.get(
                "transaction.timeout.ms", TRANSACTION_TIMEOUT_MS
            )
        self._conf = client_config(base_conf, **overrides)
        self._producer = Producer(self._conf)
        self.transactional = transactional_id is not None
        #: librdkafka's queue bound (records); the runner pauses fetching well below it.
        self.queue_limit = int(overrides["queue.buffering.max.messages"])
        self._failures = 0
        self._first_failure: str | None = None
        self._fatal: KafkaError | None = None
        self._produce = self._producer.produce
        self._epoch = AckEpoch(self._on_delivery)

    def refresh_metadata(self, topic: str, timeout: float = 10.0) -> None:
        """Learn ``topic``'s partitions now: one added since (partitions added while running)
        is refused as an unknown partition until the next periodic metadata refresh."""
        self._producer.list_topics(topic, timeout=timeout)

    def seal(self) -> AckEpoch:
        """End the current acknowledgement epoch and return it; later records go to a new one."""
        epoch, self._epoch = self._epoch, AckEpoch(self._on_delivery)
        return epoch

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() and self._fatal is None:
            self._fatal = err

    def explain(self, exc: KafkaException) -> StreamError:
        """A produce()/poll()/flush() exception as one readable error.

        After a fatal producer error (e.g. not authorized to get an idempotent producer
        id) every produce() fails with a bare "Local: Fatal error"; the cause arrives
        through ``error_cb``, which only runs inside poll(). A transactional producer
        whose transaction broke refuses records with "Erroneous state".
        """
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError):
            return FatalError(f"produce failed: {exc}")
        if err.code() == KafkaError._FATAL:
            try:
                self._producer.poll(0)  # error_cb, or poll itself raises the fatal error
            except KafkaException as polled:
                cause = polled.args[0] if polled.args else None
                if isinstance(cause, KafkaError) and self._fatal is None:
                    self._fatal = cause
            err = self._fatal or err
        if self.transactional and err.code() in _FENCED:
            return ProducerFencedError(f"producer fenced: {err.str()}")
        if self.transactional and err.code() == KafkaError._STATE:
            return ProducerResetNeeded(f"transactional producer unusable: {err.str()}")
        if err.fatal() or err.code() == KafkaError._FATAL:
            return FatalError(f"producer failed for good: {err.str()}")
        return FatalError(f"produce failed: {err.str()}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures += 1
            if self._first_failure is None:
                self._first_failure = f"{msg.topic()}: {err.str()}"

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int = -1,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
    ) -> None:
        """Queue one record; waits for queue space instead of failing when the queue is full."""
        epoch = self._epoch
        ack = epoch.ack if self.tracks_acks else None
        while True:
            try:
                self._produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    timestamp=timestamp,
                    # list is invariant: ours fits the client's wider element type, but mypy
                    # cannot see that; no cast() call on this per-record path
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=ack,
                )
                epoch.produced += 1
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise self.explain(exc) from None

    def produce_values(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: Sequence[list[tuple[str, bytes]] | None] | None = None,
    ) -> None:
        """Queue many records: the hot path's loop, kept free of per-record attribute lookups.

        ``headers`` (optional) is aligned with ``values`` (lineage, trace context).
        """
        produce = self._produce
        epoch = self._epoch
        ack = epoch.ack if self.tracks_acks else None
        queued = 0  # by the fast path; the BufferError path counts its own
        if headers is None:
            for i, value in enumerate(values):
                try:
                    produce(topic, value, keys[i], on_delivery=ack)
                    queued += 1
                except BufferError:
                    self._producer.poll(0.05)
                    self.produce(topic, value, keys[i])
        else:
            for i, value in enumerate(values):
                try:
                    produce(topic, value, keys[i], on_delivery=ack, headers=headers[i])  # type: ignore[arg-type]
                    queued += 1
                except BufferError:
                    self._producer.poll(0.05)
                    self.produce(topic, value, keys[i], headers=headers[i])
        epoch.produced += queued

    def poll(self) -> None:
        """Serve delivery callbacks without blocking."""
        self._producer.poll(0)

    def flush(self, timeout: float) -> None:
        """Wait until every queued record is acknowledged.

        Raises CheckpointError if a record failed delivery for good, TransientError if
        records are still unacknowledged after ``timeout`` (librdkafka keeps retrying them).
        """
        try:
            remaining = self._producer.flush(timeout)
        except KafkaException as exc:  # a fatal producer error surfaces from flush/poll
            raise self.explain(exc) from None
        self._raise_failures()
        if remaining:
            raise TransientError(f"{remaining} records not yet acknowledged after {timeout:.1f}s")

    def check_failures(self) -> None:
        """Raise CheckpointError if a record failed delivery for good since the last check
        (or a fatal producer error arrived); serves pending delivery reports first."""
        try:
            self._producer.poll(0)
        except KafkaException as exc:
            raise self.explain(exc) from None
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self._failures:
            failures, first = self._failures, self._first_failure
            self._failures, self._first_failure = 0, None
            raise CheckpointError(f"{failures} records failed delivery (first: {first})")

    # -- transactions (exactly_once) --------------------------------------------------------

    def init_transactions(self, timeout: float = 30.0) -> None:
        """Register the transactional id; fences any older producer that used it (and aborts
        its open transaction). A coordinator that is not ready yet is waited for."""

        def attempt() -> None:
            try:
                self._producer.init_transactions(timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.retriable():
                    raise TransientError(f"init transactions: {err.str()}") from None
                raise FatalError(f"cannot initialise transactions: {_describe(exc)}") from None

        try:
            retry_call(attempt, policy=ABORT_RETRY, operation="init_transactions")
        except RetryExhausted as exc:
            raise FatalError(f"cannot initialise transactions: {exc}") from None

    def reset(self) -> None:
        """Replace a broken transactional producer by a new instance with the same
        transactional id, and begin a transaction: ``init_transactions`` fences the old
        instance and aborts whatever it left open. Records queued in it are discarded."""
        old = self._producer
        with contextlib.suppress(KafkaException, RuntimeError):
            old.purge(in_queue=True, in_flight=True)
        self._producer = Producer(self._conf)
        self._produce = self._producer.produce
        self._failures, self._first_failure, self._fatal = 0, None, None
        del old
        self.init_transactions()
        self.begin()

    def begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise self._classify(exc, "begin transaction", 30.0) from None

    def send_offsets(
        self, offsets: list[TopicPartition], group_metadata: object, timeout: float
    ) -> None:
        """Add consumed offsets to the open transaction (KIP-447: fenced by group generation)."""
        try:
            self._producer.send_offsets_to_transaction(offsets, group_metadata, timeout)
        except KafkaException as exc:
            raise self._classify(exc, "sending offsets to the transaction", timeout) from None

    def commit(self, timeout: float) -> None:
        """Commit the open transaction (a retriable failure may be retried by calling again)."""
        try:
            self._producer.commit_transaction(timeout)
        except KafkaException as exc:
            raise self._classify(exc, "transaction commit", timeout) from None
        self._raise_failures()

    def abort(self, timeout: float = 30.0) -> None:
        """Abort the open transaction: every record produced in it is discarded.

        An abort that times out (broker restarting) is retried with backoff. An abort
        refused because the producer was fenced meanwhile — typically the broker timed
        the transaction out during an outage and bumped the epoch — raises
        ProducerFencedError, so the caller replaces the producer and rewinds (or stops,
        under static membership) instead of failing the worker. An abort refused because
        the transaction or the producer's state is stale (``INVALID_TXN_STATE``: the
        coordinator was unreachable for longer than ``transaction.timeout.ms`` and aborted
        it itself), or still not done after ``ABORT_GIVE_UP_S``, raises ProducerResetNeeded:
        replace the producer and rewind (it stopped the worker before; a 20 s isolation
        of the controller on the three-node cluster showed both).
        """

        def attempt() -> None:
            try:
                self._producer.abort_transaction(timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() in _FENCED:
                    raise ProducerFencedError(
                        f"transaction abort refused, producer fenced ({err.str()}): its "
                        "transaction outlived transaction.timeout.ms, or another worker "
                        "with the same transactional id took over"
                    ) from None
                if isinstance(err, KafkaError) and (
                    err.code() in _RESET_ON_ABORT or (err.fatal() and not err.retriable())
                ):
                    raise ProducerResetNeeded(
                        f"transaction abort refused ({err.str()}): replacing the producer"
                    ) from None
                if isinstance(err, KafkaError) and err.retriable():
                    raise TransientError(f"transaction abort: {err.str()}") from None
                raise FatalError(f"transaction abort failed: {_describe(exc)}") from None

        try:
            retry_call(attempt, policy=ABORT_ONLY_RETRY, operation="abort_transaction")
        except RetryExhausted as exc:
            raise ProducerResetNeeded(
                f"transaction abort not done after {ABORT_GIVE_UP_S:.0f}s ({exc}): "
                "replacing the producer"
            ) from None
        self._failures, self._first_failure = 0, None

    def _classify(self, exc: KafkaException, action: str, timeout: float) -> StreamError:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError):
            return FatalError(f"{action} failed: {exc}")
        if err.code() in _FENCED:
            return ProducerFencedError(
                f"{action} failed: this worker's transactional producer was fenced "
                f"({err.str()}): another worker with the same transactional id took over, "
                "or its transaction outlived transaction.timeout.ms"
            )
        if err.code() == KafkaError._STATE:
            return ProducerResetNeeded(f"{action} failed: producer unusable: {err.str()}")
        if err.fatal():
            return FatalError(f"{action} failed: {err.str()}")
        if err.txn_requires_abort():
            self.abort(timeout)
            return TransactionAbortedError(f"{action} failed, transaction aborted: {err.str()}")
        if err.retriable():
            return TransientError(f"{action} failed (retriable): {err.str()}")
        return FatalError(f"{action} failed: {err.str()}")

    def __len__(self) -> int:
        return len(self._producer)


def _describe(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)
