"""One error hierarchy for the whole processor.

::

    StreamError                      base of everything raised on purpose
    ├── ConfigError                  bad configuration; names the field (fails at start-up)
    ├── TransientError               may succeed if retried (timeouts, broker unavailable,
    │   │                            a lookup that failed); retried with backoff
    │   ├── CircuitOpenError         a breaker refused the call without trying it
    │   └── BackpressureError        a sink asks the caller to retry after ``retry_after`` s
    ├── PoisonMessageError           this record can never be processed; goes to the DLQ
    │   ├── ValidationError          fails the input contract (stage ``validate``)
    │   └── LateEventError           arrived after its window closed (stage ``correlate``)
    └── FatalError                   the worker cannot go on (auth failure, fenced producer,
        ├── BrokerUnavailableError   broker unreachable at start-up
        └── CheckpointError          outputs or state could not be made durable; the
                                     checkpoint is aborted and nothing is committed

Stages raise nothing per event: they return rejects (see ``stream.stages``), so
one bad record never costs an exception unwind in the middle of a batch.
"""

from __future__ import annotations


class StreamError(Exception):
    """Base class of every error the processor raises on purpose."""


class ConfigError(StreamError):
    """Configuration is invalid. ``field`` names the offending setting."""

    def __init__(self, field: str, reason: str, source: str | None = None) -> None:
        where = f"invalid pipeline file {source}" if source else "invalid configuration"
        super().__init__(f"{where}: {field}: {reason}")
        self.field = field
        self.reason = reason
        self.source = source

    def in_file(self, source: str) -> ConfigError:
        """The same error, naming the pipeline file it was found in."""
        return self if self.source else ConfigError(self.field, self.reason, source)


class TransientError(StreamError):
    """An operation failed but may succeed when retried."""


class CircuitOpenError(TransientError):
    """A circuit breaker is open and refused the call."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry after {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class BackpressureError(TransientError):
    """A sink cannot take more now; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float, message: str = "sink is applying backpressure") -> None:
        super().__init__(f"{message}; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class PoisonMessageError(StreamError):
    """A record that can never be processed; it belongs in the dead-letter topic."""


class ValidationError(PoisonMessageError):
    """A record violates the input contract."""


class LateEventError(PoisonMessageError):
    """An event arrived after the window it belongs to was closed."""


class FatalError(StreamError):
    """The worker cannot continue."""


class BrokerUnavailableError(FatalError):
    """The Kafka cluster could not be reached."""


class CheckpointError(FatalError):
    """A checkpoint step failed; offsets were not committed."""
