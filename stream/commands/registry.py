"""``stream registry start|stop|status``: the local schema registry from the command line.

The registry is Apicurio Registry's Confluent-compatible API, fetched once from Maven
Central (see :mod:`stream.registry`). Nothing heavy is imported at registration, so
``stream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os

from stream.localjvm.cli import (
    NOT_RUNNING_EXIT,
    lifecycle_actions,
    one_line_errors,
    service_parser,
)

URL_ENV = "STREAM_SCHEMA_REGISTRY_URL"
_friendly = one_line_errors("stream registry")

_DESCRIPTION = """\
Run a real schema registry on this machine, no Docker needed: Apicurio Registry
{version} with its Confluent-compatible API at http://127.0.0.1:PORT/apis/ccompat/v7
(what confluent-kafka's schema-registry client and serializers speak), its management
interface on 127.0.0.1:PORT+1, global compatibility BACKWARD, storage in memory (a
restart starts empty) or, with `start --persistent`, in an H2 database file under
registry-PORT/storage/ (a restart serves the same schemas under the same ids).

The first start fetches the distribution (~158 MB) from Maven Central with Maven into
$STREAM_HOME/apicurio-registry-{version}/ (default ./.stream); it runs on Java 21+,
looked for in $STREAM_REGISTRY_JAVA_HOME, $JAVA_HOME, PATH and /usr/lib/jvm.
registry-PORT/ holds the pid file, registry.json and registry.log.

If STREAM_SCHEMA_REGISTRY_URL is set, everything uses that registry instead and
`start` starts nothing."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from stream.registry.dist import REGISTRY_VERSION

    actions, common = service_parser(
        sub,
        "registry",
        help="start, stop or inspect a local schema registry (Confluent-compatible API)",
        description=_DESCRIPTION.format(version=REGISTRY_VERSION),
        default_port=8081,
        port_help="API port; the management interface uses PORT+1 (default 8081)",
        home_help="state directory for the distribution and the pid/log files "
        "(default: $STREAM_HOME or ./.stream)",
    )

    start, stop, status = lifecycle_actions(
        actions,
        common,
        noun="registry",
        ready="its API answers",
        status_description="Show the local registry's state, URL, pid, storage and files, "
        "and whether STREAM_SCHEMA_REGISTRY_URL (if set) answers. Exit code 0 if the registry "
        "the project uses answers, 3 if not.",
    )
    start.add_argument(
        "--persistent",
        action="store_true",
        help="keep schemas in an H2 database file in registry-PORT/storage/ instead of in "
        "memory, so a restart (with --persistent again) serves the same schemas and ids",
    )
    start.set_defaults(func=_run_start)
    stop.set_defaults(func=_run_stop)
    status.set_defaults(func=_run_status)


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
    url = registry.start(args.port, args.home, timeout=args.timeout, persistent=args.persistent)
    after = registry.status(args.port, args.home)
    state = "already running" if before.running else "started"
    print(f"Apicurio Registry {after.version} {state} at {url} (pid {after.pid})")
    print(f"  storage:  {after.storage}")
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
    print(f"storage:   {state.storage}")
    print(f"files:     {state.data_dir}")
    if state.external is None:
        return 0 if state.running else NOT_RUNNING_EXIT
    answer = (
        "answers" if state.external_error is None else f"does not answer ({state.external_error})"
    )
    print(f"external:  {URL_ENV}={state.external} {answer}; the project uses that registry")
    return 0 if state.external_error is None else NOT_RUNNING_EXIT
