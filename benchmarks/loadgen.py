"""Run the load generator without installing the package: ``python benchmarks/loadgen.py ...``.

Same options as ``stream loadgen`` (see ``--help``); the code lives in ``stream.loadgen``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.loadgen import cli


def main() -> int:
    parser = argparse.ArgumentParser(prog="loadgen")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["loadgen", *sys.argv[1:]])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
