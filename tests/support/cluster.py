"""A local three-node Kafka cluster for failure tests, and a handle to break it.

The ``kafka_cluster`` fixture (tests/conftest.py, module scope) starts
:mod:`stream.localbroker.cluster` — three KRaft nodes, replication factor 3,
``min.insync.replicas=2`` — with data in a temporary directory and jars from the
shared ``$STREAM_HOME`` cache, and yields a :class:`ClusterHandle`:

    handle.bootstrap                      "h1:p1,h2:p2,h3:p3"
    handle.stop(n) / start(n) / kill(n)   clean stop, restart, SIGKILL
    handle.isolate(n) / heal(n)           link down/up (netns), else SIGSTOP/SIGCONT
    handle.delay(n, ms, loss) / clear(n)  tc netem on the node's link (netns + sch_netem)
    handle.leaders(topic)                 {partition: leader node}
    handle.restore()                      every node running, reachable, registered

Network namespaces are used when this process may create them (root, and the
sandbox allows ``ip netns add``) unless ``STREAM_TEST_CLUSTER_NETNS=0``; otherwise
the reason is printed once and isolation falls back to pausing the node's JVM.
``STREAM_BOOTSTRAP_SERVERS`` does not apply: these tests must own the processes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

NETNS_ENV = "STREAM_TEST_CLUSTER_NETNS"
NODES = 3
START_TIMEOUT_S = 120.0

T = TypeVar("T")


def quiet_logger() -> logging.Logger:
    """librdkafka logs through this; connection errors to nodes we broke are expected."""
    logger = logging.getLogger("tests.cluster.quiet")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except Exception as exc:  # a broken node makes some probes raise: keep polling
            value, last_error = None, exc
        else:
            last_error = None
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last error: {last_error})")
        time.sleep(interval)


@dataclass
class ClusterHandle:
    port: int
    home: Path
    bootstrap: str
    netns: bool
    libs: Path  # the cached Kafka jars
    netns_error: str | None = None  # why namespaces are not used, if they are not
    _admins: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- processes ---------------------------------------------------------------

    def stop(self, node: int) -> None:
        from stream.localbroker import cluster

        cluster.stop_node(self.port, node, self.home)

    def start(self, node: int) -> None:
        from stream.localbroker import cluster

        cluster.start(
            self.port, home=self.home, only_node=node, timeout=START_TIMEOUT_S, libs=self.libs
        )

    def kill(self, node: int) -> None:
        from stream.localbroker import cluster

        assert cluster.kill_node(self.port, node, self.home), f"node {node} was not running"

    def pause(self, node: int) -> None:
        from stream.localbroker import cluster

        cluster.pause_node(self.port, node, self.home)

    def resume(self, node: int) -> None:
        from stream.localbroker import cluster

        cluster.resume_node(self.port, node, self.home)

    # --- network -------------------------------------------------------------------

    def isolate(self, node: int) -> None:
        """Cut the node off: link down with namespaces, SIGSTOP without."""
        from stream.localbroker import cluster

        if self.netns:
            cluster.isolate_node(self.port, node, self.home)
        else:
            self.pause(node)

    def heal(self, node: int) -> None:
        from stream.localbroker import cluster

        if self.netns:
            cluster.heal_node(self.port, node, self.home)
        else:
            self.resume(node)

    def delay(self, node: int, delay_ms: float = 200.0, loss_percent: float = 5.0) -> None:
        """netem delay and loss on the link to the node; raises ``NetemUnavailableError``
        (with tc's exact message) where the kernel has no sch_netem, ``LocalBrokerError``
        without namespaces."""
        from stream.localbroker import cluster

        cluster.degrade_node(self.port, node, self.home, delay_ms, loss_percent)

    def clear(self, node: int) -> None:
        from stream.localbroker import cluster

        if self.netns:
            cluster.clear_node(self.port, node, self.home)

    # --- looking at it -------------------------------------------------------------

    def status(self) -> Any:
        from stream.localbroker import cluster

        return cluster.status(self.port, self.home)

    def listener(self, node: int) -> str:
        from stream.localbroker import cluster

        return cluster.layout(self.port, self.home).listener(node)

    def bootstrap_without(self, *nodes: int) -> str:
        """Bootstrap list of the other nodes (a client that never asks the broken ones)."""
        return ",".join(self.listener(n) for n in range(1, NODES + 1) if n not in nodes)

    def admin(self, bootstrap: str | None = None) -> Any:
        from confluent_kafka.admin import AdminClient

        servers = bootstrap or self.bootstrap
        if servers not in self._admins:
            self._admins[servers] = AdminClient(
                {
                    "bootstrap.servers": servers,
                    "logger": quiet_logger(),
                    "reconnect.backoff.max.ms": 1000,
                    "socket.connection.setup.timeout.ms": 3000,
                }
            )
        return self._admins[servers]

    def partitions(self, topic: str, bootstrap: str | None = None) -> dict[int, Any]:
        """Partition metadata (``leader``, ``replicas``, ``isrs``) as a broker reports it.

        librdkafka asks any broker it knows; one that has not applied the topic's
        creation yet says "unknown topic" for a moment, so that is retried."""

        def ask() -> dict[int, Any]:
            metadata = self.admin(bootstrap).list_topics(topic=topic, timeout=5).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(str(metadata.error))
            return dict(metadata.partitions)

        return wait_for(f"metadata of {topic}", ask, timeout=15)

    def leaders(self, topic: str, bootstrap: str | None = None) -> dict[int, int]:
        return {p: meta.leader for p, meta in self.partitions(topic, bootstrap).items()}

    def wait_full_isr(self, topic: str, timeout: float = 60.0) -> None:
        """Wait until every node's metadata shows all replicas of ``topic`` in sync
        (metadata reaches the brokers one by one: asking one is not enough)."""

        def full() -> bool:
            for node in range(1, NODES + 1):
                parts = self.partitions(topic, self.listener(node))
                if not all(len(p.isrs) == NODES and p.leader > 0 for p in parts.values()):
                    return False
            return True

        wait_for(f"every replica of {topic} in sync on every node", full, timeout)

    def restore(self, timeout: float = 90.0) -> None:
        """Undo every fault: resume, heal, clear, start what is stopped; wait until all
        three brokers are registered with an active controller."""
        from stream.localbroker import cluster

        for node in range(1, NODES + 1):
            self.clear(node)
            if self.netns:
                cluster.heal_node(self.port, node, self.home)
            if cluster.node_pid(self.port, node, self.home) is not None:
                self.resume(node)
        # starts only the stopped nodes
        cluster.start(
            self.port, NODES, self.home, timeout=timeout, netns=self.netns, libs=self.libs
        )

        def healthy() -> bool:
            state = cluster.status(self.port, self.home)
            if state.quorum is None or sorted(state.quorum.voters) != [1, 2, 3]:
                return False
            brokers = self.admin().describe_cluster(request_timeout=5).result(10).nodes
            return len(brokers) == NODES

        wait_for("all three nodes registered with an active controller", healthy, timeout)


_netns_notice_shown = False


def _choose_netns() -> tuple[bool, str | None]:
    global _netns_notice_shown
    from stream.localbroker import netfaults

    if os.environ.get(NETNS_ENV, "1") == "0":
        return False, f"{NETNS_ENV}=0"
    reason = netfaults.netns_unavailable_reason()
    if reason is not None and not _netns_notice_shown:
        _netns_notice_shown = True
        print(
            f"kafka_cluster: no network namespaces ({reason}); isolate() pauses the node instead",
            file=sys.stderr,
        )
    return reason is None, reason


def running_cluster(home: Path) -> Iterator[ClusterHandle]:
    """Start a three-node cluster in ``home``, yield its handle, stop it (the fixture's body)."""
    import pytest

    from stream import localbroker
    from stream.localbroker import cluster
    from stream.localbroker.ports import free_port_block

    netns, reason = _choose_netns()
    try:
        libs = localbroker.ensure_server_jars()  # the shared $STREAM_HOME cache
        port = free_port_block(2 * NODES)
        bootstrap = cluster.start(
            port, NODES, home, timeout=START_TIMEOUT_S, netns=netns, libs=libs
        )
    except localbroker.LocalBrokerError as exc:
        pytest.fail(f"could not start a local Kafka cluster: {exc}", pytrace=False)
    try:
        yield ClusterHandle(port, home, bootstrap, netns, libs, reason)
    finally:
        cluster.stop(port, home, timeout=10.0)  # throw-away data: no long clean shutdown
