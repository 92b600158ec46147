"""Command-line plumbing shared by ``stream broker`` and ``stream registry``.

Both commands take ``--port`` and ``--home``, have ``start|stop|status`` actions with a
``--timeout``, exit 3 from ``status`` when nothing runs and print errors as one line
prefixed with the command and action (``stream broker start: error: ...``) instead of
a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import wraps

from stream.errors import StreamError

NOT_RUNNING_EXIT = 3

Action = Callable[[argparse.Namespace], int]


def one_line_errors(command: str) -> Callable[[Action], Action]:
    """Errors become ``<command> <action>: error: <message>`` on stderr and exit code 1."""

    def decorate(func: Action) -> Action:
        @wraps(func)
        def wrapper(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except StreamError as exc:
                print(f"{command} {args.action}: error: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"{command} {args.action}: interrupted", file=sys.stderr)
                return 130

        return wrapper

    return decorate


def service_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    *,
    help: str,
    description: str,
    default_port: int,
    port_help: str,
    home_help: str,
) -> tuple[argparse._SubParsersAction, argparse.ArgumentParser]:  # type: ignore[type-arg]
    """``stream <name> ACTION`` and the parent parser with ``--port``/``--home`` that each
    action takes (pass it as ``parents=[common]``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", type=int, default=default_port, help=port_help)
    common.add_argument("--home", metavar="DIR", help=home_help)
    parser = sub.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    return actions, common


def lifecycle_actions(
    actions: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    *,
    noun: str,
    ready: str,
    status_description: str,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``start``, ``stop`` and ``status`` actions of a service, each with ``common``'s
    options and start/stop with ``--timeout``; the caller adds its own options and handlers.
    ``ready`` finishes "wait until ..." in ``start``'s description."""
    start = actions.add_parser(
        "start",
        parents=[common],
        help=f"start the {noun} (does nothing if it already runs)",
        description=f"Start the local {noun} in the background and wait until {ready}. "
        "Idempotent: if it already runs, report it and return.",
    )
    add_timeout(start, 90.0, f"seconds to wait for the {noun}")
    stop = actions.add_parser(
        "stop",
        parents=[common],
        help=f"stop the {noun} (no error if it is not running)",
        description=f"Stop the local {noun}: SIGTERM for a clean shutdown, SIGKILL after "
        "--timeout.",
    )
    add_timeout(stop, 30.0, "seconds before SIGKILL")
    status = actions.add_parser(
        "status",
        parents=[common],
        help=f"show whether the {noun} runs (exit code 0 if it does, {NOT_RUNNING_EXIT} if not)",
        description=status_description,
    )
    return start, stop, status


def add_timeout(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    """``--timeout SECONDS`` with the default shown in its help."""
    parser.add_argument(
        "--timeout", type=float, default=default, help=f"{what} (default {default:g})"
    )
