"""Which offset-lookup failures the group-less reader asks again about (pure logic)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.kafka import reader


class Flaky:
    """Fails with ``code`` ``times`` times, then answers ``42``."""

    def __init__(self, code: int, times: int) -> None:
        self.code, self.left, self.calls = code, times, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise KafkaException(KafkaError(self.code))
        return 42


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader.time, "sleep", lambda _: None)


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.UNKNOWN_LEADER_EPOCH,  # the CI failure: a just-created topic's leader epoch
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    ],
)
def test_transient_lookup_errors_are_asked_again(code: int) -> None:
    call = Flaky(code, times=3)
    assert reader.retry_lookup(call) == 42
    assert call.calls == 4


def test_a_permanent_error_is_raised_at_once() -> None:
    call = Flaky(KafkaError.TOPIC_AUTHORIZATION_FAILED, times=1)
    with pytest.raises(KafkaException):
        reader.retry_lookup(call)
    assert call.calls == 1


def test_a_transient_error_that_lasts_past_the_timeout_is_raised() -> None:
    call = Flaky(KafkaError.UNKNOWN_LEADER_EPOCH, times=10**9)
    with pytest.raises(KafkaException):
        reader.retry_lookup(call, timeout=0.05)
    assert call.calls > 1
