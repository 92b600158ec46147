"""Shared CLI plumbing: config flags, settings loading, one-line errors.

Every command that touches Kafka takes ``--config FILE`` and
``--bootstrap-servers``; failures print one readable line (``stream: error: ...``)
and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from stream.errors import ConfigError, StreamError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="pipeline YAML (topics, stages, rules); STREAM_* environment variables override it",
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: $STREAM_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """Load Settings from --config + environment + explicit flags (flags win)."""
    from stream.config import load_settings

    if getattr(args, "bootstrap_servers", None):
        overrides["bootstrap_servers"] = args.bootstrap_servers
    settings = load_settings(getattr(args, "config", None))
    if overrides:
        settings = settings.model_copy(update=overrides)
    return settings


def fail(message: str, code: int = EXIT_RUNTIME) -> int:
    print(f"stream: error: {message}", file=sys.stderr)
    return code


def friendly_errors(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Turn the project's errors and Ctrl-C into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ConfigError as exc:
            return fail(str(exc), EXIT_CONFIG)
        except StreamError as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def quiet_librdkafka() -> None:
    """librdkafka connection errors repeat every second; keep only the first of each."""
    logger = logging.getLogger("stream.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
