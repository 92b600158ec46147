"""A local multi-node Kafka cluster: N KRaft nodes, each broker and controller, one quorum.

``stream broker start --nodes 3`` runs three JVMs from the same cached jars as the
single broker (:mod:`stream.localbroker.broker`), each with a 512 MB heap so three
fit beside a worker on a 2-core, 24 GiB machine. Node ``n`` (1-based) listens on
``PORT + 2(n-1)`` for clients and the next port for its controller; the three
controllers form a static voter quorum. Cluster defaults: replication factor 3 and
``min.insync.replicas=2`` for new topics, the offsets and transaction state topics
(so ``acks=all`` survives one lost node and refuses writes with two gone).

    stream broker start --nodes 3                 # 127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096
    stream broker status                          # pid, listener, up/paused/isolated per node,
                                                  # and the active controller
    stream broker stop --node 2                   # clean shutdown of one node
    stream broker kill --node 2                   # SIGKILL, no shutdown
    stream broker start --node 2                  # bring it back
    stream broker pause --node 2 / resume --node 2   # SIGSTOP / SIGCONT: unresponsive node
    stream broker stop                            # the whole cluster

As root, ``--netns`` runs every node in its own network namespace behind a bridge
(see :mod:`stream.localbroker.netfaults`), which adds real network faults::

    stream broker start --nodes 3 --netns         # nodes on 10.77.<port % 256>.11-13
    stream broker isolate --node 2 / heal --node 2
    stream broker degrade --node 2 --delay-ms 200 --loss 5   /  clear --node 2

From Python::

    >>> from stream.localbroker import cluster
    >>> bootstrap = cluster.start(port=9092, nodes=3)
    >>> cluster.kill_node(9092, 2); cluster.start(port=9092, only_node=2)
    >>> cluster.status(9092).active_controller
    1
    >>> cluster.stop(9092)

Files live in ``<home>/cluster-<port>/`` (see :mod:`stream.localbroker.paths`). The
node count and the namespace choice are fixed at the first start; delete that
directory to change them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.localbroker import netfaults
from stream.localbroker.broker import (
    _await_ready,
    _format_command,
    _write_config_files,
    launch_node,
    running_pid,
)
from stream.localbroker.config import BrokerSettings, new_cluster_id
from stream.localbroker.errors import BrokerStartError, LocalBrokerError, PortInUseError
from stream.localbroker.jars import KAFKA_VERSION, ensure_server_jars, find_java
from stream.localbroker.paths import BrokerPaths, cluster_dir, cluster_node_paths, resolve_home
from stream.localbroker.quorum import QuorumState, describe_quorum
from stream.localjvm.locking import exclusive_lock
from stream.localjvm.ports import HOST, port_accepts, port_is_free
from stream.localjvm.process import terminate

DEFAULT_NODES = 3
NODE_HEAP = "512m"
_FORMAT_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ClusterLayout:
    """Where each node of the cluster on ``port`` listens and keeps its files."""

    home: Path
    port: int
    nodes: int
    netns: bool = False

    @property
    def net(self) -> netfaults.NetLayout:
        return netfaults.NetLayout(self.port, self.nodes)

    @property
    def directory(self) -> Path:
        return cluster_dir(self.home, self.port)

    @property
    def state_file(self) -> Path:
        return self.directory / "cluster.json"

    @property
    def lock_file(self) -> Path:
        return self.directory / ".lock"

    def node_ids(self) -> range:
        return range(1, self.nodes + 1)

    def client_port(self, node: int) -> int:
        return self.port + 2 * (node - 1)

    def host(self, node: int) -> str:
        return self.net.address(node) if self.netns else HOST

    def listener(self, node: int) -> str:
        return f"{self.host(node)}:{self.client_port(node)}"

    def controller(self, node: int) -> tuple[str, int]:
        return self.host(node), self.client_port(node) + 1

    def paths(self, node: int) -> BrokerPaths:
        return cluster_node_paths(self.home, self.port, node)

    @property
    def bootstrap(self) -> str:
        return ",".join(self.listener(node) for node in self.node_ids())

    def settings(self, node: int) -> BrokerSettings:
        voters = ",".join(
            f"{other}@{self.host(other)}:{self.client_port(other) + 1}" for other in self.node_ids()
        )
        replicas = min(self.nodes, 3)
        return BrokerSettings(
            port=self.client_port(node),
            log_dirs=self.paths(node).log_dirs,
            node_id=node,
            host=self.host(node),
            quorum_voters=voters,
            replication_factor=replicas,
            min_insync_replicas=max(1, replicas - 1),
        )

    def exec_prefix(self, node: int) -> list[str]:
        return self.net.exec_prefix(node) if self.netns else []


@dataclass(frozen=True)
class NodeStatus:
    node: int
    pid: int | None
    listener: str
    up: bool  # the client port accepts connections
    paused: bool  # SIGSTOPped
    isolated: bool  # its veth is down (netns only)
    data_dir: Path

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def state(self) -> str:
        if self.pid is None:
            return "stopped"
        if self.paused:
            return "paused"
        if self.isolated:
            return "isolated"
        return "up" if self.up else "starting or unresponsive"


@dataclass(frozen=True)
class ClusterStatus:
    port: int
    bootstrap: str
    version: str
    netns: bool
    directory: Path
    nodes: tuple[NodeStatus, ...]
    quorum: QuorumState | None

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    @property
    def active_controller(self) -> int | None:
        return None if self.quorum is None else self.quorum.leader_id


def exists(port: int, home: Path | str | None = None) -> bool:
    return (cluster_dir(resolve_home(home), port) / "cluster.json").exists()


def layout(port: int, home: Path | str | None = None) -> ClusterLayout:
    """The layout of the existing cluster on ``port`` (raises if there is none)."""
    home_dir = resolve_home(home)
    state = _read_state(cluster_dir(home_dir, port) / "cluster.json")
    if not state:
        raise LocalBrokerError(
            f"there is no local cluster on port {port} in {home_dir}; "
            f"start one with: stream broker start --nodes {DEFAULT_NODES} --port {port}"
        )
    return ClusterLayout(home_dir, port, int(str(state["nodes"])), bool(state.get("netns", False)))


def start(
    port: int = 9092,
    nodes: int = DEFAULT_NODES,
    home: Path | str | None = None,
    timeout: float = 120.0,
    *,
    netns: bool = False,
    only_node: int | None = None,
    libs: Path | None = None,
) -> str:
    """Start every node of the cluster (or only ``only_node``) and return the bootstrap list.

    Idempotent like the single broker: running nodes are left alone. ``nodes`` and
    ``netns`` apply when the cluster is created; later starts use what it was created with.
    """
    home_dir = resolve_home(home)
    if only_node is not None:
        chosen = layout(port, home_dir)
    else:
        if nodes < 1:
            raise LocalBrokerError(f"a cluster needs at least one node, not {nodes}")
        chosen = ClusterLayout(home_dir, port, nodes, netns)
    chosen.directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(chosen.lock_file):
        chosen, cluster_id = _load_or_create(chosen, wanted_netns=netns, explicit=only_node is None)
        which = chosen.node_ids() if only_node is None else [_checked(chosen, only_node)]
        if chosen.netns:
            reason = netfaults.netns_unavailable_reason()
            if reason is not None:
                raise LocalBrokerError(f"--netns is not possible here: {reason}")
            netfaults.setup(chosen.net)
        to_start = [node for node in which if running_pid(chosen.paths(node)) is None]
        if not chosen.netns:
            _require_free_ports(chosen, to_start)
        java = find_java()
        jar_dir = libs if libs is not None else ensure_server_jars(home_dir)
        for node in chosen.node_ids():  # every node's file names every voter: rewrite all
            chosen.paths(node).data_dir.mkdir(parents=True, exist_ok=True)
            _write_config_files(chosen.paths(node), chosen.settings(node))
        _format_all(chosen, to_start, cluster_id, java, jar_dir)
        launched = {
            node: launch_node(
                chosen.paths(node),
                java,
                jar_dir,
                heap=NODE_HEAP,
                prefix=chosen.exec_prefix(node),
            )
            for node in to_start
        }
        try:
            deadline = time.monotonic() + timeout
            for node in which:
                # a just-launched pid is ours even before its exec shows in /proc/<pid>/cmdline
                pid = launched[node][0] if node in launched else running_pid(chosen.paths(node))
                if pid is None:
                    raise BrokerStartError(
                        f"node {node} of the cluster on port {port} is not running"
                    )
                log_start = launched[node][1] if node in launched else 0
                remaining = max(1.0, deadline - time.monotonic())
                _await_ready(
                    chosen.paths(node), chosen.listener(node), remaining, None, pid, log_start
                )
        except BrokerStartError:
            for pid, _ in launched.values():
                terminate(pid, timeout=10.0)
            for node in launched:
                chosen.paths(node).pid_file.unlink(missing_ok=True)
            raise
    return chosen.bootstrap


def stop(port: int = 9092, home: Path | str | None = None, timeout: float = 30.0) -> list[int]:
    """Stop every node (SIGTERM together, SIGKILL after ``timeout`` s) and remove the
    namespaces. Returns the nodes that were running."""
    if not exists(port, home):
        return []
    chosen = layout(port, home)
    with exclusive_lock(chosen.lock_file):
        pids = {node: running_pid(chosen.paths(node)) for node in chosen.node_ids()}
        running = {node: pid for node, pid in pids.items() if pid is not None}
        usable_netns = chosen.netns and netfaults.netns_unavailable_reason() is None
        if usable_netns:  # an isolated node could not shut down cleanly: reconnect all first
            for node in chosen.node_ids():
                netfaults.clear(chosen.net, node)
                with contextlib.suppress(netfaults.NetworkFaultError):
                    netfaults.heal(chosen.net, node)
        for pid in running.values():
            netfaults.resume(pid)  # a SIGSTOPped JVM would not act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pid in running.values():
            terminate(pid, timeout=max(0.5, deadline - time.monotonic()))
        for node in chosen.node_ids():
            chosen.paths(node).pid_file.unlink(missing_ok=True)
        if usable_netns:
            netfaults.teardown(chosen.net)
    return sorted(running)


def stop_node(port: int, node: int, home: Path | str | None = None, timeout: float = 30.0) -> bool:
    """Clean shutdown of one node (it hands its leaderships over first)."""
    chosen = layout(port, home)
    paths = chosen.paths(_checked(chosen, node))
    with exclusive_lock(chosen.lock_file):
        pid = running_pid(paths)
        if pid is not None:
            netfaults.resume(pid)
            terminate(pid, timeout)
        paths.pid_file.unlink(missing_ok=True)
    return pid is not None


def kill_node(port: int, node: int, home: Path | str | None = None) -> bool:
    """SIGKILL one node: no controlled shutdown, as when a host dies."""
    chosen = layout(port, home)
    paths = chosen.paths(_checked(chosen, node))
    with exclusive_lock(chosen.lock_file):
        pid = running_pid(paths)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            terminate(pid, timeout=10.0)  # waits for the exit (and reaps our own child)
        paths.pid_file.unlink(missing_ok=True)
    return pid is not None


def pause_node(port: int, node: int, home: Path | str | None = None) -> int:
    """SIGSTOP one node's JVM; returns its pid."""
    pid = _pid_of(port, node, home)
    netfaults.pause(pid)
    return pid


def resume_node(port: int, node: int, home: Path | str | None = None) -> int:
    pid = _pid_of(port, node, home)
    netfaults.resume(pid)
    return pid


def isolate_node(port: int, node: int, home: Path | str | None = None) -> None:
    netfaults.isolate(_netns_layout(port, home), node)


def heal_node(port: int, node: int, home: Path | str | None = None) -> None:
    netfaults.heal(_netns_layout(port, home), node)


def degrade_node(
    port: int,
    node: int,
    home: Path | str | None = None,
    delay_ms: float = 200.0,
    loss_percent: float = 5.0,
) -> None:
    netfaults.degrade(_netns_layout(port, home), node, delay_ms, loss_percent)


def clear_node(port: int, node: int, home: Path | str | None = None) -> None:
    netfaults.clear(_netns_layout(port, home), node)


def status(port: int = 9092, home: Path | str | None = None) -> ClusterStatus:
    chosen = layout(port, home)
    state = _read_state(chosen.state_file)
    nodes = tuple(_node_status(chosen, node) for node in chosen.node_ids())
    controllers = [chosen.controller(n.node) for n in nodes if n.running and not n.paused]
    return ClusterStatus(
        port=port,
        bootstrap=chosen.bootstrap,
        version=str(state.get("version", KAFKA_VERSION)),
        netns=chosen.netns,
        directory=chosen.directory,
        nodes=nodes,
        quorum=describe_quorum(controllers, timeout=0.5) if controllers else None,
    )


def node_pid(port: int, node: int, home: Path | str | None = None) -> int | None:
    chosen = layout(port, home)
    return running_pid(chosen.paths(_checked(chosen, node)))


def _node_status(chosen: ClusterLayout, node: int) -> NodeStatus:
    paths = chosen.paths(node)
    pid = running_pid(paths)
    paused = pid is not None and netfaults.is_paused(pid)
    isolated = chosen.netns and netfaults.is_isolated(chosen.net, node)
    host, port = chosen.host(node), chosen.client_port(node)
    up = pid is not None and not paused and not isolated and port_accepts(port, host, timeout=0.3)
    return NodeStatus(node, pid, chosen.listener(node), up, paused, isolated, paths.data_dir)


def _pid_of(port: int, node: int, home: Path | str | None) -> int:
    pid = node_pid(port, node, home)
    if pid is None:
        raise LocalBrokerError(f"node {node} of the cluster on port {port} is not running")
    return pid


def _netns_layout(port: int, home: Path | str | None) -> netfaults.NetLayout:
    chosen = layout(port, home)
    if not chosen.netns:
        raise LocalBrokerError(
            f"the cluster on port {port} runs without network namespaces; network faults need "
            f"one started with --netns (as root) — use pause/resume to make a node unresponsive"
        )
    return chosen.net


def _checked(chosen: ClusterLayout, node: int) -> int:
    if node not in chosen.node_ids():
        raise LocalBrokerError(
            f"the cluster on port {chosen.port} has nodes 1 to {chosen.nodes}, not {node}"
        )
    return node


def _read_state(path: Path) -> dict[str, object]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _load_or_create(
    wanted: ClusterLayout, *, wanted_netns: bool, explicit: bool
) -> tuple[ClusterLayout, str]:
    """The stored layout and cluster id; a new cluster is recorded first."""
    state = _read_state(wanted.state_file)
    if not state:
        cluster_id = new_cluster_id()
        record = {
            "version": KAFKA_VERSION,
            "cluster_id": cluster_id,
            "nodes": wanted.nodes,
            "netns": wanted.netns,
        }
        wanted.state_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return wanted, cluster_id
    stored = ClusterLayout(wanted.home, wanted.port, int(str(state["nodes"])), bool(state["netns"]))
    if explicit and (stored.nodes, stored.netns) != (wanted.nodes, wanted_netns):
        raise LocalBrokerError(
            f"{stored.directory} holds a cluster of {stored.nodes} nodes "
            f"{'with' if stored.netns else 'without'} network namespaces; start it that way, "
            f"or stop it and delete that directory to create another"
        )
    return stored, str(state["cluster_id"])


def _require_free_ports(chosen: ClusterLayout, nodes: Sequence[int]) -> None:
    for node in nodes:
        for needed in (chosen.client_port(node), chosen.client_port(node) + 1):
            if not port_is_free(needed):
                raise PortInUseError(
                    f"port {needed} (node {node} of the cluster on port {chosen.port}) is already "
                    f"in use by another process; choose another --port (a cluster of "
                    f"{chosen.nodes} nodes needs {2 * chosen.nodes} ports from it)"
                )


def _format_all(
    chosen: ClusterLayout, nodes: Sequence[int], cluster_id: str, java: Path, libs: Path
) -> None:
    """``kafka-storage format`` every unformatted node with the shared cluster id, in parallel."""
    pending = [node for node in nodes if not chosen.paths(node).formatted_marker.exists()]
    children = {}
    for node in pending:
        paths = chosen.paths(node)
        command = _format_command(paths, chosen.settings(node), java, libs, cluster_id)
        children[node] = subprocess.Popen(
            command,
            cwd=paths.data_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    failures = []
    for node, child in children.items():
        try:
            output, _ = child.communicate(timeout=_FORMAT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
        if child.returncode != 0 or not chosen.paths(node).formatted_marker.exists():
            tail = "\n".join(output.strip().splitlines()[-10:])
            failures.append(f"node {node} (exit code {child.returncode}):\n{tail}")
    if failures:
        raise BrokerStartError("kafka-storage format failed for " + "\n".join(failures))
