"""Errors of the project-managed local broker.

All of them are :class:`stream.errors.FatalError`: without its broker nothing
else can run, and each message is written to be shown to a person as is (what
went wrong, and what to do about it).

::

    FatalError
    └── LocalBrokerError            the local broker could not be prepared, started or stopped
        ├── PrerequisiteMissingError  Java 17+ or Maven is not installed
        ├── ServerJarsError           Maven could not fetch the Kafka server jars
        ├── PortInUseError            the port belongs to something else
        └── BrokerStartError          the broker died or did not answer in time
"""

from __future__ import annotations

from stream.errors import FatalError


class LocalBrokerError(FatalError):
    """The local Kafka broker could not be prepared, started or stopped."""


class PrerequisiteMissingError(LocalBrokerError):
    """Java 17+ or Maven, needed to run the Kafka server, is missing."""


class ServerJarsError(LocalBrokerError):
    """Maven failed to fetch the Kafka server jars."""


class PortInUseError(LocalBrokerError):
    """A port the broker needs is held by another process."""


class BrokerStartError(LocalBrokerError):
    """The broker process exited, or did not answer within the timeout."""
