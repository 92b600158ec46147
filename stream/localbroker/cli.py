"""``stream broker start|stop|status``: the local Kafka broker from the command line.

Heavy imports (confluent-kafka) happen inside the commands, so registering them
keeps ``stream --help`` fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from stream.localjvm.cli import (
    NOT_RUNNING_EXIT,
    lifecycle_actions,
    one_line_errors,
    service_parser,
)

if TYPE_CHECKING:
    from stream.localbroker.cluster import ClusterStatus

BOOTSTRAP_ENV = "STREAM_BOOTSTRAP_SERVERS"
_friendly = one_line_errors("stream broker")

_DESCRIPTION = """\
Run a real Apache Kafka {version} broker on this machine, no Docker needed: one KRaft
node (broker + controller) listening on 127.0.0.1:PORT, controller on PORT+1.

The first start fetches the Kafka server jars with Maven (needs Java 17+ and Maven:
apt-get install openjdk-17-jre-headless maven) into $STREAM_HOME/kafka-{version}/libs;
later starts take a few seconds. State lives in $STREAM_HOME (default ./.stream):
broker-PORT/ holds the data, server.properties and server.log.

A local cluster for failure tests: `start --nodes 3` runs three KRaft nodes (each
broker + controller, 512 MB heap) on PORT, PORT+2, PORT+4 (controllers one above),
with replication factor 3 and min.insync.replicas=2 by default; its files live in
cluster-PORT/. `stop`/`start --node N`, `kill --node N` (SIGKILL), `pause`/`resume
--node N` (SIGSTOP/SIGCONT) act on one node. As root, `start --nodes 3 --netns` puts
each node in its own network namespace on 10.77.<PORT mod 256>.0/24 behind a bridge,
which adds `isolate`/`heal --node N` (link down/up) and `degrade`/`clear --node N`
(tc netem delay and loss).

If STREAM_BOOTSTRAP_SERVERS is set, everything uses that cluster instead and
`start` starts nothing."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from stream.localbroker.jars import KAFKA_VERSION

    actions, common = service_parser(
        sub,
        "broker",
        help="start, stop or inspect a local Apache Kafka broker",
        description=_DESCRIPTION.format(version=KAFKA_VERSION),
        default_port=9092,
        port_help="client port; the controller listens on PORT+1 (default 9092)",
        home_help="state directory for jars and broker data (default: $STREAM_HOME or ./.stream)",
    )

    start, stop, status = lifecycle_actions(
        actions,
        common,
        noun="broker",
        ready="it answers",
        status_description="Show the local broker's state, address, pid, version and data "
        "directory. Exit code 0 if it runs, 3 if not.",
    )
    start.add_argument(
        "--security",
        choices=["plaintext", "sasl_scram"],
        default="plaintext",
        help="plaintext (default), or sasl_scram: SASL/SCRAM-SHA-256 with ACLs, users "
        "admin/admin-secret (super user) and worker/worker-secret; chosen at the first start",
    )
    start.add_argument(
        "--nodes",
        type=_positive,
        metavar="N",
        help="run a local cluster of N KRaft nodes on PORT, PORT+2, ... (e.g. 3) "
        "instead of one broker",
    )
    start.add_argument(
        "--node", type=_positive, metavar="N", help="start only node N of the existing cluster"
    )
    start.add_argument(
        "--netns",
        action="store_true",
        help="with --nodes, as root: each node in its own network namespace, so that "
        "isolate/heal/degrade can break its network",
    )
    start.set_defaults(func=_run_start)

    stop.add_argument(
        "--node", type=_positive, metavar="N", help="stop only node N of the cluster (cleanly)"
    )
    stop.set_defaults(func=_run_stop)

    status.set_defaults(func=_run_status)

    for verb, summary in _NODE_VERBS.items():
        node_action = actions.add_parser(
            verb, parents=[common], help=summary, description=summary + "."
        )
        node_action.add_argument(
            "--node", type=_positive, metavar="N", required=True, help="the node (1-based)"
        )
        if verb == "degrade":
            node_action.add_argument(
                "--delay-ms", type=float, default=200.0, help="added delay (default 200)"
            )
            node_action.add_argument(
                "--loss", type=float, default=5.0, help="percent of packets dropped (default 5)"
            )
        node_action.set_defaults(func=_run_node_verb)


_NODE_VERBS = {
    "kill": "SIGKILL one node of the local cluster (no clean shutdown)",
    "pause": "SIGSTOP one node of the local cluster: it stops answering",
    "resume": "SIGCONT a paused node",
    "isolate": "cut one node's network link (--netns cluster; otherwise pauses it)",
    "heal": "restore an isolated node's link (--netns cluster; otherwise resumes it)",
    "degrade": "tc netem delay and loss on the link to one node (--netns cluster)",
    "clear": "remove the delay and loss set by degrade",
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


@_friendly
def _run_start(args: argparse.Namespace) -> int:
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        print(
            f"{BOOTSTRAP_ENV} is set: using the Kafka cluster at {external}; "
            f"no local broker started (unset it to run one)"
        )
        return 0
    if args.nodes is not None or args.node is not None or args.netns:
        return _start_cluster(args)
    from stream import localbroker

    before = localbroker.status(args.port, args.home)
    bootstrap = localbroker.start(
        args.port, args.home, timeout=args.timeout, security=args.security
    )
    after = localbroker.status(args.port, args.home)
    state = "already running" if before.running else "started"
    print(f"Kafka {after.version} broker {state} at {bootstrap} (pid {after.pid})")
    print(f"  security: {after.security}")
    print(f"  logs:     {after.data_dir / 'server.log'}")
    print(f"  data:     {after.data_dir}")
    print(f"  use it:   export {BOOTSTRAP_ENV}={bootstrap}")
    print(f"  stop it:  stream broker stop --port {args.port}")
    return 0


def _start_cluster(args: argparse.Namespace) -> int:
    from stream.localbroker import cluster, netfaults

    if args.security != "plaintext":
        print("stream broker start: error: a local cluster runs plaintext only", file=sys.stderr)
        return 1
    netns = args.netns
    if netns:
        reason = netfaults.netns_unavailable_reason()
        if reason is not None:
            print(f"network namespaces are not available here: {reason}", file=sys.stderr)
            print("starting without them; pause/resume make a node unresponsive", file=sys.stderr)
            netns = False
    if args.node is not None:
        cluster.start(args.port, home=args.home, timeout=args.timeout, only_node=args.node)
    else:
        nodes = args.nodes if args.nodes is not None else cluster.DEFAULT_NODES
        cluster.start(args.port, nodes, args.home, timeout=args.timeout, netns=netns)
    state = cluster.status(args.port, args.home)
    _print_cluster(state)
    print(f"  use it:     export {BOOTSTRAP_ENV}={state.bootstrap}")
    print(f"  stop it:    stream broker stop --port {args.port}")
    return 0


def _print_cluster(state: ClusterStatus) -> None:
    running = sum(node.running for node in state.nodes)
    netns = "yes" if state.netns else "no"
    print(
        f"Kafka {state.version} cluster on port {state.port}: {running} of {len(state.nodes)} "
        f"nodes running, network namespaces: {netns}"
    )
    print(f"  bootstrap:  {state.bootstrap}")
    quorum = state.quorum
    if quorum is None:
        print("  controller: none active (no quorum, or no node answers)")
    else:
        voters = " ".join(str(voter) for voter in sorted(quorum.voters))
        print(
            f"  controller: node {quorum.leader_id} is active (epoch {quorum.leader_epoch}); "
            f"voters {voters}"
        )
    for node in state.nodes:
        pid = f"pid {node.pid}" if node.pid is not None else "-"
        print(f"  node {node.node}:     {node.state:<9} {pid:<10} {node.listener}")
    print(f"  data:       {state.directory}")


@_friendly
def _run_node_verb(args: argparse.Namespace) -> int:
    from stream.localbroker import cluster

    node, port, home = args.node, args.port, args.home
    layout = cluster.layout(port, home)
    what = args.action
    if what in ("isolate", "heal") and not layout.netns:
        what = "pause" if what == "isolate" else "resume"
        print(
            f"the cluster has no network namespaces: {what} node {node} instead (SIGSTOP/SIGCONT)"
        )
    if what == "kill":
        done = cluster.kill_node(port, node, home)
        print(f"killed node {node} (SIGKILL)" if done else f"node {node} was not running")
    elif what == "pause":
        print(f"paused node {node} (pid {cluster.pause_node(port, node, home)})")
    elif what == "resume":
        print(f"resumed node {node} (pid {cluster.resume_node(port, node, home)})")
    elif what == "isolate":
        cluster.isolate_node(port, node, home)
        print(f"isolated node {node}: {layout.net.veth(node)} is down")
    elif what == "heal":
        cluster.heal_node(port, node, home)
        print(f"healed node {node}: {layout.net.veth(node)} is up")
    elif what == "degrade":
        cluster.degrade_node(port, node, home, delay_ms=args.delay_ms, loss_percent=args.loss)
        print(f"node {node}: {args.delay_ms:g} ms delay, {args.loss:g}% loss on the link to it")
    else:
        cluster.clear_node(port, node, home)
        print(f"node {node}: link delay and loss cleared")
    return 0


@_friendly
def _run_stop(args: argparse.Namespace) -> int:
    from stream import localbroker
    from stream.localbroker import cluster
    from stream.localbroker.paths import broker_paths, resolve_home

    if args.node is not None:
        stopped_node = cluster.stop_node(args.port, args.node, args.home, timeout=args.timeout)
        print(f"stopped node {args.node}" if stopped_node else f"node {args.node} was not running")
        return 0
    if cluster.exists(args.port, args.home):
        nodes = cluster.stop(args.port, args.home, timeout=args.timeout)
        shown = ", ".join(str(node) for node in nodes)
        print(
            f"stopped nodes {shown} of the cluster on port {args.port}"
            if nodes
            else f"no node of the cluster on port {args.port} was running"
        )
        if not broker_paths(resolve_home(args.home), args.port).data_dir.is_dir():
            return 0
    stopped = localbroker.stop(args.port, args.home, timeout=args.timeout)
    where = localbroker.bootstrap_address(args.port)
    print(f"stopped the broker at {where}" if stopped else f"no local broker running at {where}")
    return 0


@_friendly
def _run_status(args: argparse.Namespace) -> int:
    from stream import localbroker
    from stream.localbroker import cluster

    state = localbroker.status(args.port, args.home)
    if not state.running and cluster.exists(args.port, args.home):
        cluster_state = cluster.status(args.port, args.home)
        _print_cluster(cluster_state)
        return 0 if cluster_state.running else NOT_RUNNING_EXIT
    print(f"running:   {'yes' if state.running else 'no'}")
    if state.pid is not None:
        print(f"pid:       {state.pid}")
    print(f"bootstrap: {state.bootstrap}")
    print(f"version:   Kafka {state.version}")
    print(f"security:  {state.security}")
    print(f"data:      {state.data_dir}")
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        print(f"note:      {BOOTSTRAP_ENV}={external} is set; the project uses that cluster")
    return 0 if state.running else NOT_RUNNING_EXIT
