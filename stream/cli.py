"""The ``stream`` command.

Each sub-command lives in the module that owns its concern and exposes
``register(subparsers)``; this module only collects them. Registration must stay
cheap (no Kafka or Faust imports at module level) so ``stream --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "stream.commands.demo",
    "stream.commands.worker",
    "stream.localbroker.cli",
    "stream.commands.topics",
    "stream.loadgen.cli",
    "stream.commands.bench",
    "stream.commands.dlq",
    "stream.commands.plan",
    "stream.commands.ingest",
    "stream.commands.sink",
    "stream.commands.schema",
    "stream.commands.registry",
    "stream.commands.test_pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream",
        description=(
            "High-throughput Kafka stream processor: validate -> enrich -> windowed correlate.\n"
            "Start with `stream demo` (local broker + worker + load generator)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result = func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
