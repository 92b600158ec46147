"""``stream registry start|stop|status``: the local schema registry from the command line.

The registry is Apicurio Registry's Confluent-compatible API, fetched once from Maven
Central (see :mod:`stream.registry`). Nothing heavy is imported at registration, so
``stream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import wraps

from stream.errors import StreamError

URL_ENV = "STREAM_SCHEMA_REGISTRY_URL"
_NOT_RUNNING_EXIT = 3

_DESCRIPTION = """\
Run a real schema registry on this machine, no Docker needed: Apicurio Registry
{version} with its Confluent-compatible API at http://127.0.0.1:PORT/apis/ccompat/v7
(what confluent-kafka's schema-registry client and serializers speak), its management
interface on 127.0.0.1:PORT+1, global compatibility BACKWARD, storage in memory (a
restart starts empty).

The first start fetches the distribution (~158 MB) from Maven Central with Maven into
$STREAM_HOME/apicurio-registry-{version}/ (default ./.stream); it runs on Java 21+,
looked for in $STREAM_REGISTRY_JAVA_HOME, $JAVA_HOME, PATH and /usr/lib/jvm.
registry-PORT/ holds the pid file and registry.log.

If STREAM_SCHEMA_REGISTRY_URL is set, everything uses that registry instead and
`start` starts nothing."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from stream.registry.dist import REGISTRY_VERSION

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--port",
        type=int,
        default=8081,
        help="API port; the management interface uses PORT+1 (default 8081)",
    )
    common.add_argument(
        "--home",
        metavar="DIR",
        help="state directory for the distribution and the pid/log files "
        "(default: $STREAM_HOME or ./.stream)",
    )
    parser = sub.add_parser(
        "registry",
        help="start, stop or inspect a local schema registry (Confluent-compatible API)",
        description=_DESCRIPTION.format(version=REGISTRY_VERSION),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start",
        parents=[common],
        help="start the registry (does nothing if it already runs)",
        description="Start the local registry in the background and wait until its API "
        "answers. Idempotent: if it already runs, report it and return.",
    )
    start.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for it (default 90)"
    )
    start.set_defaults(func=_run_start)

    stop = actions.add_parser(
        "stop",
        parents=[common],
        help="stop the registry (no error if it is not running)",
        description="Stop the local registry: SIGTERM, SIGKILL after --timeout.",
    )
    stop.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)"
    )
    stop.set_defaults(func=_run_stop)

    status = actions.add_parser(
        "status",
        parents=[common],
        help="show whether the registry runs (exit code 0 if it does, 3 if not)",
        description="Show the local registry's state, URL, pid and files, and whether "
        "STREAM_SCHEMA_REGISTRY_URL (if set) answers. Exit code 0 if the registry the "
        "project uses answers, 3 if not.",
    )
    status.set_defaults(func=_run_status)


def _friendly(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors become a readable message on stderr and exit code 1, not a traceback."""

    @wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except StreamError as exc:
            print(f"stream registry {args.action}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"stream registry {args.action}: interrupted", file=sys.stderr)
            return 130

    return wrapper


@_friendly
def _run_start(args: argparse.Namespace) -> int:
    external = os.environ.get(URL_ENV)
    if external:
        print(
            f"{URL_ENV} is set: using the schema registry at {external}; "
            f"no local registry started (unset it to run one)"
        )
        return 0
    from stream import registry

    before = registry.status(args.port, args.home)
    url = registry.start(args.port, args.home, timeout=args.timeout)
    after = registry.status(args.port, args.home)
    state = "already running" if before.running else "started"
    print(f"Apicurio Registry {after.version} {state} at {url} (pid {after.pid})")
    print(f"  logs:     {after.data_dir / 'registry.log'}")
    print(f"  use it:   export {URL_ENV}={url}")
    print(f"  stop it:  stream registry stop --port {args.port}")
    return 0


@_friendly
def _run_stop(args: argparse.Namespace) -> int:
    from stream import registry

    stopped = registry.stop(args.port, args.home, timeout=args.timeout)
    where = registry.local_url(args.port)
    print(
        f"stopped the registry at {where}" if stopped else f"no local registry running at {where}"
    )
    return 0


@_friendly
def _run_status(args: argparse.Namespace) -> int:
    from stream import registry

    state = registry.status(args.port, args.home)
    print(f"running:   {'yes' if state.running else 'no'}")
    if state.pid is not None:
        print(f"pid:       {state.pid}")
    print(f"url:       {state.url}")
    print(f"version:   Apicurio Registry {state.version}")
    print(f"files:     {state.data_dir}")
    if state.external is None:
        return 0 if state.running else _NOT_RUNNING_EXIT
    answer = (
        "answers" if state.external_error is None else f"does not answer ({state.external_error})"
    )
    print(f"external:  {URL_ENV}={state.external} {answer}; the project uses that registry")
    return 0 if state.external_error is None else _NOT_RUNNING_EXIT
