"""Checkpoint coordinator: order of steps, deferral on transient errors, poisoning on fatal ones.

Fakes stand in for the confluent-kafka consumer and the output producer; they
record every call so the tests can assert the exact order (state → flush →
commit) and that nothing is committed after a failure.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream.checkpoint import STATE_OFFSET_KEY, Checkpointer
from stream.errors import CheckpointError, FatalError, TransientError
from stream.kafka.producer import AckEpoch, TransactionAbortedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class CommitLog(list[dict[int, int]]):
    """The fake consumer's commits; calling it answers like ``Consumer.committed``."""

    def __init__(self, consumer: FakeConsumer) -> None:
        super().__init__()
        self._consumer = consumer

    def __call__(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        group = self._consumer.group
        return [
            TopicPartition(tp.topic, tp.partition, group.get(tp.partition, -1001))
            for tp in partitions
        ]


class FakeConsumer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.commit_errors: list[int] = []
        #: The commits made (a list), callable like ``Consumer.committed``.
        self.committed = CommitLog(self)
        #: What the group has committed, as ``committed()`` reports it.
        self.group: dict[int, int] = {}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        self.calls.append("commit")
        if self.commit_errors:
            raise KafkaException(KafkaError(self.commit_errors.pop(0)))
        self.committed.append({tp.partition: tp.offset for tp in offsets})
        self.group.update({tp.partition: tp.offset for tp in offsets})
        return offsets

    def consumer_group_metadata(self) -> object:
        return "group-metadata"


class FakeProducer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.records: list[tuple[str, Any, Any, int]] = []
        self.flush_errors: list[Exception] = []
        self.commit_errors: list[Exception] = []

        self.epochs: list[AckEpoch] = [AckEpoch(self._failed)]
        self.failures: list[str] = []

    def _failed(self, err: Any, msg: Any) -> None:
        self.failures.append(str(err))

    def produce(self, topic: str, value: Any, key: Any = None, *, partition: int = -1) -> None:
        self.records.append((topic, key, value, partition))
        self.epochs[-1].produced += 1

    def output(self, n: int) -> None:
        """The runner producing ``n`` outputs into the current epoch."""
        self.epochs[-1].produced += n

    def seal(self) -> AckEpoch:
        self.calls.append("seal")
        self.epochs.append(AckEpoch(self._failed))
        return self.epochs[-2]

    def poll(self) -> None:
        self.calls.append("poll")

    def check_failures(self) -> None:
        if self.failures:
            raise CheckpointError(f"{len(self.failures)} records failed delivery")

    def flush(self, timeout: float) -> None:
        self.calls.append("flush")
        if self.flush_errors:
            raise self.flush_errors.pop(0)

    def send_offsets(self, offsets: list[TopicPartition], metadata: object, timeout: float) -> None:
        self.calls.append("send_offsets")

    def commit(self, timeout: float) -> None:
        self.calls.append("commit_transaction")
        if self.commit_errors:
            raise self.commit_errors.pop(0)

    def begin(self) -> None:
        self.calls.append("begin")


class FakeState:
    def __init__(self) -> None:
        self.changes: dict[int, list[tuple[bytes, bytes | None]]] = {}

    def drain_changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        return self.changes.pop(partition, [])


def make(guarantee: str = "at_least_once", **kwargs: Any) -> tuple[Checkpointer, Any, Any, Clock]:
    calls: list[str] = []
    clock = Clock()
    consumer, producer = FakeConsumer(calls), FakeProducer(calls)
    state = FakeState()
    cp = Checkpointer(
        consumer=consumer,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        state=state,
        changelog_topic="changelog",
        input_topic="events",
        guarantee=guarantee,  # type: ignore[arg-type]
        interval=1.0,
        every=1000,
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 1.0,
        **kwargs,
    )
    cp.state = state  # type: ignore[attr-defined]
    return cp, consumer, producer, clock


def test_writes_state_then_flushes_then_commits() -> None:
    cp, consumer, producer, _ = make()
    cp.assigned = {0, 1}
    cp.state.changes[1] = [(b"k", b"v")]  # type: ignore[attr-defined]
    cp.record_progress({0: 10, 1: 7}, 17)

    assert cp.checkpoint() is True

    assert producer.calls == ["flush", "commit"]
    assert consumer.committed == [{0: 10, 1: 7}]
    assert ("changelog", b"k", b"v", 1) in producer.records
    assert ("changelog", STATE_OFFSET_KEY, b"10", 0) in producer.records
    assert cp.pending == {} and cp.committed == {0: 10, 1: 7}


@pytest.mark.parametrize(
    "code", [KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS, KafkaError._TRANSPORT]
)
def test_commit_refused_by_a_rebalance_is_deferred_not_fatal(code: int) -> None:
    cp, consumer, _, clock = make()
    consumer.commit_errors = [code]
    cp.record_progress({0: 10}, 10)
    clock.now += 5

    assert cp.checkpoint() is False
    assert cp.pending == {0: 10} and cp.failed is None
    assert not cp.due()  # backing off (first cap 0.5 s, rand=1.0)
    clock.now += 0.5
    assert cp.due()
    assert cp.checkpoint() is True
    assert consumer.committed == [{0: 10}]


def test_flush_timeout_defers_without_committing() -> None:
    cp, consumer, producer, _ = make()
    producer.flush_errors = [TransientError("3 records not yet acknowledged")]
    cp.record_progress({0: 10}, 10)

    assert cp.checkpoint() is False
    assert "commit" not in consumer.calls
    assert cp.pending == {0: 10}


def test_delivery_failure_poisons_the_coordinator() -> None:
    cp, consumer, producer, _ = make()
    producer.flush_errors = [CheckpointError("1 records failed delivery")]
    cp.record_progress({0: 10}, 10)

    with pytest.raises(CheckpointError):
        cp.checkpoint()
    calls_before = list(producer.calls)
    with pytest.raises(CheckpointError, match="earlier failure"):
        cp.checkpoint([0], wait=10)
    assert producer.calls == calls_before  # not even a flush: the failed records are gone
    assert consumer.committed == []


def test_transient_failures_for_longer_than_the_budget_become_fatal() -> None:
    cp, _, producer, clock = make(give_up_after=30.0)
    cp.record_progress({0: 10}, 10)
    producer.flush_errors = [TransientError("broker down")] * 100
    assert cp.checkpoint() is False
    clock.now += 31
    with pytest.raises(CheckpointError, match="failing for 31s"):
        cp.checkpoint()
    assert cp.failed is not None


def test_final_checkpoint_waits_out_transient_failures() -> None:
    cp, consumer, producer, clock = make()
    producer.flush_errors = [TransientError("slow")] * 3
    cp.record_progress({0: 10}, 10)

    assert cp.checkpoint(wait=20.0) is True
    assert consumer.committed == [{0: 10}]
    assert clock.slept == [0.5, 1.0, 1.0]  # full-jitter caps with rand() = 1, at most the interval


def test_final_checkpoint_gives_up_at_its_deadline() -> None:
    cp, consumer, producer, clock = make()
    producer.flush_errors = [TransientError("down")] * 100
    cp.record_progress({0: 10}, 10)

    assert cp.checkpoint(wait=3.0) is False
    assert sum(clock.slept) == pytest.approx(3.0)
    assert consumer.committed == []


def test_fenced_static_member_is_fatal() -> None:
    cp, consumer, _, _ = make()
    consumer.commit_errors = [KafkaError.FENCED_INSTANCE_ID]
    cp.record_progress({0: 10}, 10)
    with pytest.raises(FatalError, match=r"same group\.instance\.id"):
        cp.checkpoint()
    assert cp.failed is not None


def test_authorization_error_on_commit_is_fatal() -> None:
    cp, consumer, _, _ = make()
    consumer.commit_errors = [KafkaError.GROUP_AUTHORIZATION_FAILED]
    cp.record_progress({0: 10}, 10)
    with pytest.raises(FatalError):
        cp.checkpoint()


def test_exactly_once_retries_a_retriable_commit_in_place() -> None:
    cp, _, producer, clock = make("exactly_once")
    producer.commit_errors = [TransientError("timed out")]
    cp.record_progress({0: 10}, 10)

    assert cp.checkpoint() is True
    assert producer.calls == ["send_offsets", "commit_transaction", "commit_transaction", "begin"]
    assert len(clock.slept) == 1
    assert cp.pending == {}


def test_exactly_once_abort_begins_a_new_transaction_and_asks_for_a_rewind() -> None:
    cp, _, producer, _ = make("exactly_once")
    producer.commit_errors = [TransactionAbortedError("aborted: ILLEGAL_GENERATION")]
    cp.record_progress({0: 10}, 10)

    with pytest.raises(TransactionAbortedError):
        cp.checkpoint()
    assert producer.calls[-1] == "begin"
    assert cp.failed is None  # not poisoned: the runner rewinds and carries on


def test_exactly_once_fenced_producer_is_fatal() -> None:
    cp, _, producer, _ = make("exactly_once")
    producer.commit_errors = [FatalError("fenced")]
    cp.record_progress({0: 10}, 10)
    with pytest.raises(FatalError):
        cp.checkpoint()
    with pytest.raises(CheckpointError):
        cp.checkpoint()


# -- pipelined checkpoints (at_least_once): seal now, commit once acknowledged -----------------


def ack_all(epoch: AckEpoch) -> None:
    for _ in range(epoch.outstanding):
        epoch.ack(None, None)  # type: ignore[arg-type]


def seal(
    cp: Checkpointer, producer: Any, clock: Clock, offsets: dict[int, int], outputs: int
) -> bool:
    """Process up to ``offsets`` (``outputs`` records produced), then run the due checkpoint."""
    producer.output(outputs)
    cp.record_progress(offsets, sum(offsets.values()))
    clock.now += 1
    return cp.checkpoint()


def test_pipelined_checkpoint_commits_only_after_its_records_are_acknowledged() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    cp.assigned = {0}
    producer.output(5)
    cp.record_progress({0: 10}, 10)
    clock.now += 1

    assert cp.checkpoint() is True  # sealed: state written, nothing waited for
    assert producer.calls == ["seal"]  # no flush: the batch loop goes on
    assert ("changelog", STATE_OFFSET_KEY, b"10", 0) in producer.records
    assert consumer.committed == [] and cp.pending == {0: 10}
    assert not cp.due()

    first = producer.epochs[0]
    for _ in range(first.outstanding - 1):
        first.ack(None, None)  # type: ignore[arg-type]
    assert not cp.due()  # one record (the state marker, or an output) still unacknowledged
    first.ack(None, None)  # type: ignore[arg-type]
    assert cp.due()
    assert cp.checkpoint() is True
    assert consumer.committed == [{0: 10}]
    assert cp.committed == {0: 10} and cp.pending == {}


def test_pipelined_commit_waits_for_earlier_epochs_and_takes_the_newest_acknowledged() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    seal(cp, producer, clock, {0: 10, 1: 4}, outputs=3)  # seals epoch 0 with {0: 10, 1: 4}
    seal(cp, producer, clock, {0: 20}, outputs=3)  # seals epoch 1 with {0: 20, 1: 4}

    ack_all(producer.epochs[1])  # the later epoch acknowledged first (another partition)
    assert not cp.due()
    cp.checkpoint()
    assert consumer.committed == []  # epoch 0 is not: nothing may be committed yet

    ack_all(producer.epochs[0])
    assert cp.due()
    cp.checkpoint()
    assert consumer.committed == [{0: 20, 1: 4}]  # both, in one commit
    assert cp.awaiting_acks == 0


def test_pipelined_unacknowledged_for_longer_than_the_flush_timeout_defers() -> None:
    cp, consumer, producer, clock = make(pipelined=True, flush_timeout=5.0)
    assert seal(cp, producer, clock, {0: 10}, outputs=3)
    clock.now += 6
    assert cp.checkpoint() is False  # deferred: backing off, offsets stay pending
    assert consumer.committed == [] and cp.pending == {0: 10} and cp.failed is None
    assert not cp.due()
    ack_all(producer.epochs[0])
    ack_all(producer.epochs[1])
    clock.now += 0.5
    assert cp.checkpoint() is True
    assert consumer.committed == [{0: 10}]


def test_pipelined_delivery_failure_poisons_the_coordinator() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    seal(cp, producer, clock, {0: 10}, outputs=2)
    epoch = producer.epochs[0]
    epoch.ack(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[arg-type]
    ack_all(epoch)

    with pytest.raises(CheckpointError, match="failed delivery"):
        cp.checkpoint()
    with pytest.raises(CheckpointError, match="earlier failure"):
        cp.checkpoint()
    assert consumer.committed == []


def test_pipelined_never_commits_a_partition_it_lost() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    seal(cp, producer, clock, {0: 10, 1: 7}, outputs=2)
    cp.forget([1])  # revoked without a commit (lost) while the seal was unacknowledged
    ack_all(producer.epochs[0])
    cp.checkpoint()
    assert consumer.committed == [{0: 10}]


def test_blocking_checkpoint_covers_everything_sealed_before() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    seal(cp, producer, clock, {0: 10}, outputs=2)  # sealed, unacknowledged
    cp.record_progress({0: 15}, 5)

    assert cp.checkpoint(wait=5.0) is True  # shutdown: flush and commit in place
    assert producer.calls == ["seal", "flush", "commit"]
    assert consumer.committed == [{0: 15}]
    assert cp.awaiting_acks == 0
    ack_all(producer.epochs[0])
    assert not cp.due()  # nothing left to commit from the earlier seal


# -- bounded replay: deferrals and partitions that come back ------------------------------------


def replays() -> tuple[float, float]:
    """(observations, sum) of stream_replayed_records so far."""
    from stream.observability import metrics

    count = sum_ = 0.0
    for sample in metrics.replayed_records.collect()[0].samples:
        if sample.name.endswith("_count"):
            count = sample.value
        elif sample.name.endswith("_sum"):
            sum_ = sample.value
    return count, sum_


def test_a_deferred_checkpoint_is_retried_within_one_interval() -> None:
    cp, consumer, _, clock = make()
    consumer.commit_errors = [KafkaError.COORDINATOR_NOT_AVAILABLE] * 6
    cp.record_progress({0: 10}, 10)
    for _ in range(6):  # 0.5, 1, 2, 4, 8 s caps before; never above the 1 s interval now
        clock.now += 1.0
        assert cp.due()
        assert cp.checkpoint() is False
    clock.now += 1.0
    assert cp.due() and cp.checkpoint() is True
    assert consumer.committed == [{0: 10}]


def test_a_lost_partition_that_comes_back_untouched_resumes_from_its_acknowledged_seal() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    consumer.group = {0: 5, 1: 3}
    cp.committed = {0: 5, 1: 3}
    seal(cp, producer, clock, {0: 10, 1: 7}, outputs=2)  # sealed; the broker went away
    cp.record_progress({0: 12}, 2)  # processed after the seal (state not written)
    cp.forget([0, 1])  # session lost: the assignment is dropped
    ack_all(producer.epochs[0])  # the broker is back: the queued outputs are delivered
    before = replays()

    resumed = cp.resume([0, 1], state_offsets={0: 10, 1: 7})

    assert consumer.committed == [{0: 10, 1: 7}]  # the seal's offsets, not the older ones
    assert resumed == {0: 10, 1: 7} and cp.committed == {0: 10, 1: 7}
    count, total = replays()
    assert count - before[0] == 2 and total - before[1] == 2  # 10..12 of partition 0


def test_a_lost_partition_is_not_resumed_when_the_group_committed_meanwhile() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    consumer.group = {0: 5}
    cp.committed = {0: 5}
    seal(cp, producer, clock, {0: 10}, outputs=2)
    cp.forget([0])
    ack_all(producer.epochs[0])
    consumer.group = {0: 8}  # another worker owned it and committed

    assert cp.resume([0], state_offsets={}) == {0: 8}
    assert consumer.committed == []


def test_a_lost_partition_is_not_resumed_past_unacknowledged_outputs() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    consumer.group = {0: 5}
    cp.committed = {0: 5}
    seal(cp, producer, clock, {0: 10}, outputs=2)  # first seal, acknowledged below
    seal(cp, producer, clock, {0: 20}, outputs=2)  # second seal, never acknowledged
    cp.forget([0])
    ack_all(producer.epochs[0])

    assert cp.resume([0], state_offsets={0: 20}, wait=1.0) == {0: 10}
    assert consumer.committed == [{0: 10}]
    assert "poll" in producer.calls  # it waited for delivery reports first


def test_a_lost_partition_with_a_failed_delivery_poisons_instead_of_resuming() -> None:
    cp, consumer, producer, clock = make(pipelined=True)
    consumer.group = {0: 5}
    cp.committed = {0: 5}
    seal(cp, producer, clock, {0: 10}, outputs=2)
    cp.forget([0])
    producer.epochs[0].ack(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[arg-type]
    ack_all(producer.epochs[0])

    cp.resume([0], state_offsets={0: 10})
    assert consumer.committed == [] and cp.failed is not None


def test_exactly_once_never_resumes_but_measures_the_replay() -> None:
    cp, consumer, _, _ = make("exactly_once")
    consumer.group = {0: 100}
    before = replays()

    assert cp.resume([0], state_offsets={0: 130}) == {0: 100}
    assert consumer.committed == []
    count, total = replays()
    assert count - before[0] == 1 and total - before[1] == 30


def test_a_lost_partition_is_not_resumed_past_its_restored_window_state() -> None:
    # Another owner wrote the changelog last: the state reflects offset 8 only.
    cp, consumer, producer, clock = make(pipelined=True)
    consumer.group = {0: 5}
    cp.committed = {0: 5}
    seal(cp, producer, clock, {0: 10}, outputs=2)
    cp.forget([0])
    ack_all(producer.epochs[0])

    assert cp.resume([0], state_offsets={0: 8}) == {0: 8}
    assert consumer.committed == [{0: 8}]
    cp2, consumer2, producer2, clock2 = make(pipelined=True)
    seal(cp2, producer2, clock2, {0: 10}, outputs=2)
    cp2.forget([0])
    ack_all(producer2.epochs[0])
    assert cp2.resume([0], state_offsets={}) == {}  # no state marker: replay instead
    assert consumer2.committed == []
