"""A real Apache Kafka broker for development, tests and the demo, managed by the project.

No Docker needed: the Kafka server's jars come from Maven Central (cached under
``$STREAM_HOME``, default ``./.stream``) and run on the local Java 17+ as one
KRaft node. ``STREAM_BOOTSTRAP_SERVERS`` pointing at a cluster makes all of this
unnecessary.

    >>> from stream import localbroker
    >>> bootstrap = localbroker.start(port=9092)      # idempotent; "127.0.0.1:9092"
    >>> localbroker.status(9092).running
    True
    >>> localbroker.stop(9092)
    True

A local multi-node cluster for failure tests (three KRaft nodes, replication
factor 3, ``min.insync.replicas=2``; kill, pause or — as root, in network
namespaces — isolate single nodes) is :mod:`stream.localbroker.cluster`.
"""

from __future__ import annotations

from stream.localbroker.broker import (
    DEFAULT_PORT,
    BrokerStatus,
    SecurityOption,
    bootstrap_address,
    running_pid,
    start,
    status,
    stop,
)
from stream.localbroker.config import DEFAULT_SCRAM_USERS, ScramSecurity
from stream.localbroker.errors import (
    BrokerStartError,
    LocalBrokerError,
    PortInUseError,
    PrerequisiteMissingError,
    ServerJarsError,
)
from stream.localbroker.jars import KAFKA_VERSION, ensure_server_jars, find_java
from stream.localbroker.paths import HOME_ENV, resolve_home
from stream.localbroker.readiness import wait_until_ready
from stream.localjvm.ports import free_port_pair

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SCRAM_USERS",
    "HOME_ENV",
    "KAFKA_VERSION",
    "BrokerStartError",
    "BrokerStatus",
    "LocalBrokerError",
    "PortInUseError",
    "PrerequisiteMissingError",
    "ScramSecurity",
    "SecurityOption",
    "ServerJarsError",
    "bootstrap_address",
    "ensure_server_jars",
    "find_java",
    "free_port_pair",
    "resolve_home",
    "running_pid",
    "start",
    "status",
    "stop",
    "wait_until_ready",
]
