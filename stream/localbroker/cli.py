"""``stream broker start|stop|status``: the local Kafka broker from the command line.

Heavy imports (confluent-kafka) happen inside the commands, so registering them
keeps ``stream --help`` fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import wraps

from stream.errors import StreamError

BOOTSTRAP_ENV = "STREAM_BOOTSTRAP_SERVERS"
_NOT_RUNNING_EXIT = 3

_DESCRIPTION = """\
Run a real Apache Kafka {version} broker on this machine, no Docker needed: one KRaft
node (broker + controller) listening on 127.0.0.1:PORT, controller on PORT+1.

The first start fetches the Kafka server jars with Maven (needs Java 17+ and Maven:
apt-get install openjdk-17-jre-headless maven) into $STREAM_HOME/kafka-{version}/libs;
later starts take a few seconds. State lives in $STREAM_HOME (default ./.stream):
broker-PORT/ holds the data, server.properties and server.log.

If STREAM_BOOTSTRAP_SERVERS is set, everything uses that cluster instead and
`start` starts nothing."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from stream.localbroker.jars import KAFKA_VERSION

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--port",
        type=int,
        default=9092,
        help="client port; the controller listens on PORT+1 (default 9092)",
    )
    common.add_argument(
        "--home",
        metavar="DIR",
        help="state directory for jars and broker data (default: $STREAM_HOME or ./.stream)",
    )
    parser = sub.add_parser(
        "broker",
        help="start, stop or inspect a local Apache Kafka broker",
        description=_DESCRIPTION.format(version=KAFKA_VERSION),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start",
        parents=[common],
        help="start the broker (does nothing if it already runs)",
        description="Start the local broker in the background and wait until it answers. "
        "Idempotent: if it already runs, report it and return.",
    )
    start.add_argument(
        "--security",
        choices=["plaintext", "sasl_scram"],
        default="plaintext",
        help="plaintext (default), or sasl_scram: SASL/SCRAM-SHA-256 with ACLs, users "
        "admin/admin-secret (super user) and worker/worker-secret; chosen at the first start",
    )
    start.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for the broker (default 90)"
    )
    start.set_defaults(func=_run_start)

    stop = actions.add_parser(
        "stop",
        parents=[common],
        help="stop the broker (no error if it is not running)",
        description="Stop the local broker: SIGTERM for a clean shutdown, SIGKILL after --timeout.",
    )
    stop.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)"
    )
    stop.set_defaults(func=_run_stop)

    status = actions.add_parser(
        "status",
        parents=[common],
        help="show whether the broker runs (exit code 0 if it does, 3 if not)",
        description="Show the local broker's state, address, pid, version and data directory. "
        "Exit code 0 if it runs, 3 if not.",
    )
    status.set_defaults(func=_run_status)


def _friendly(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors become a readable message on stderr and exit code 1, not a traceback."""

    @wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except StreamError as exc:
            print(f"stream broker {args.action}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"stream broker {args.action}: interrupted", file=sys.stderr)
            return 130

    return wrapper


@_friendly
def _run_start(args: argparse.Namespace) -> int:
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        print(
            f"{BOOTSTRAP_ENV} is set: using the Kafka cluster at {external}; "
            f"no local broker started (unset it to run one)"
        )
        return 0
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


@_friendly
def _run_stop(args: argparse.Namespace) -> int:
    from stream import localbroker

    stopped = localbroker.stop(args.port, args.home, timeout=args.timeout)
    where = localbroker.bootstrap_address(args.port)
    print(f"stopped the broker at {where}" if stopped else f"no local broker running at {where}")
    return 0


@_friendly
def _run_status(args: argparse.Namespace) -> int:
    from stream import localbroker

    state = localbroker.status(args.port, args.home)
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
    return 0 if state.running else _NOT_RUNNING_EXIT
