"""The broker the benchmark runs against: the one in ``STREAM_BOOTSTRAP_SERVERS``, or a
private local Kafka (``stream.localbroker``) started for this run and stopped after it.

A private broker has its own data directory, so a 1M-event run leaves nothing
behind; its jars come from the shared ``$STREAM_HOME`` cache.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from stream.errors import BrokerUnavailableError

BOOTSTRAP_ENV: Final = "STREAM_BOOTSTRAP_SERVERS"
#: Ports for a private broker (client port and the next one for its controller).
PORT_RANGE: Final = (46000, 46400)
START_TIMEOUT_S: Final = 180.0


@dataclass(frozen=True)
class BrokerInfo:
    bootstrap: str
    #: True when this run started the broker itself.
    private: bool
    #: Kafka server version when known (always for a private broker).
    kafka_version: str | None


@contextmanager
def broker_session(bootstrap: str | None, log: TextIO = sys.stderr) -> Iterator[BrokerInfo]:
    """Yield the broker to use; a private one is stopped and deleted on exit."""
    from stream.localbroker import KAFKA_VERSION

    chosen = bootstrap or os.environ.get(BOOTSTRAP_ENV)
    if chosen:
        yield BrokerInfo(chosen, private=False, kafka_version=None)
        return
    from stream import localbroker

    home = Path(tempfile.mkdtemp(prefix="stream-bench-broker-"))
    try:
        libs = localbroker.ensure_server_jars()
        port = localbroker.free_port_pair(*PORT_RANGE)
        print(f"bench: starting a private Kafka {KAFKA_VERSION} on port {port}", file=log)
        started = localbroker.start(port, home, timeout=START_TIMEOUT_S, libs=libs)
    except localbroker.LocalBrokerError as exc:
        shutil.rmtree(home, ignore_errors=True)
        raise BrokerUnavailableError(f"could not start a local Kafka broker: {exc}") from None
    try:
        yield BrokerInfo(started, private=True, kafka_version=KAFKA_VERSION)
    finally:
        localbroker.stop(port, home)
        shutil.rmtree(home, ignore_errors=True)
