"""``stream schema infer|check``: draft a schema from a topic, then see how it fits.

Argument parsing, reading and printing only; the inference is
:mod:`stream.schema.infer`, the per-field accounting :mod:`stream.schema.check`.
Topics are read with the group-less readers of :mod:`stream.kafka.reader`: no
consumer group, nothing committed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from stream.commands.common import (
    EXIT_RUNTIME,
    add_config_args,
    friendly_errors,
    quiet_librdkafka,
    settings_from_args,
)

_FORMAT = argparse.RawDescriptionHelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "schema",
        help="infer a JSON Schema from a topic; check a topic against a schema",
        description=(
            "Event schemas (JSON Schema draft 2020-12, the subset the worker compiles).\n\n"
            "  stream schema infer --topic orders > orders.schema.json\n"
            "  stream schema check --topic orders --schema orders.schema.json"
        ),
        formatter_class=_FORMAT,
    )
    parser.set_defaults(func=lambda _args: _print_help(parser))
    actions = parser.add_subparsers(dest="schema_action", metavar="ACTION")
    _register_infer(actions)
    _register_check(actions)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_common(parser: argparse.ArgumentParser, *, sample_default: int | None) -> None:
    add_config_args(parser)
    parser.add_argument("--topic", required=True, metavar="TOPIC", help="topic to read")
    default = f"{sample_default:,}" if sample_default else "every record"
    parser.add_argument(
        "--sample",
        type=_positive_int,
        default=sample_default,
        metavar="N",
        help=f"read the latest N records, spread over the partitions (default: {default})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up when the records are not read within this time (default: %(default)s)",
    )


def _register_infer(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = actions.add_parser(
        "infer",
        help="write a draft JSON Schema inferred from a topic's records to stdout",
        description=(
            "Read a sample of the topic and print a JSON Schema (draft 2020-12): the types seen,\n"
            "required = present in at least --required-ratio of the records, enum for strings\n"
            "with few distinct values, format date-time when every string is an RFC 3339\n"
            "date-time with an offset, nested objects and array items. Review it before use:\n"
            "a sample shows what occurred, not what is allowed."
        ),
        formatter_class=_FORMAT,
    )
    _add_common(parser, sample_default=10_000)
    parser.add_argument(
        "--required-ratio",
        type=float,
        default=0.99,
        metavar="R",
        help="a property is required when present in this share of records (default: 0.99)",
    )
    parser.add_argument(
        "--max-enum",
        type=_positive_int,
        default=10,
        metavar="K",
        help="strings with at most K distinct values become an enum (default: %(default)s)",
    )
    parser.set_defaults(func=run_infer)


def _register_check(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = actions.add_parser(
        "check",
        help="check a topic's records against a schema: per-field completeness and validity",
        description=(
            "Decode every record (or the latest --sample N) exactly as the worker would and\n"
            "print how many it would accept, per field the share present, non-null and valid,\n"
            "and the most common rejection reasons (what would go to the DLQ). Exit status 1\n"
            "when any record would be rejected."
        ),
        formatter_class=_FORMAT,
    )
    _add_common(parser, sample_default=None)
    parser.add_argument(
        "--schema", required=True, type=Path, metavar="FILE", help="JSON Schema file (JSON or YAML)"
    )
    parser.add_argument(
        "--top", type=_positive_int, default=5, metavar="K", help="rejection reasons shown"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run_check)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


# -- reading ----------------------------------------------------------------------------


class ProgressBar:
    """``check: [#####-----] 45% 4,500/10,000 records 12,000/s`` on stderr.

    Redrawn in place on a terminal (at most 5 times a second); in a log, a plain
    line every 5 s, like ``stream loadgen``'s progress line.
    """

    def __init__(self, stream: TextIO, label: str, total: int, *, enabled: bool = True) -> None:
        self._stream = stream
        self._label = label
        self._total = max(total, 1)
        self._enabled = enabled
        self._tty = stream.isatty()
        self._interval = 0.2 if self._tty else 5.0
        self._start = self._last = time.monotonic()
        self._drawn = False

    def line(self, done: int, now: float) -> str:
        share = min(done / self._total, 1.0)
        filled = int(share * 30)
        rate = done / max(now - self._start, 1e-9)
        return (
            f"{self._label}: [{'#' * filled}{'-' * (30 - filled)}] {share:4.0%} "
            f"{done:,}/{self._total:,} records {rate:,.0f}/s"
        )

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (not force and now - self._last < self._interval):
            return
        self._last = now
        if self._tty:
            self._stream.write(f"\r{self.line(done, now)}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(self.line(done, now) + "\n")
        self._stream.flush()

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def _plan(conf: dict[str, Any], topic: str, sample: int | None) -> tuple[dict[int, int], Any]:
    """End offsets and start offsets (``None``: from the beginning) of the read."""
    from stream.errors import ConfigError
    from stream.kafka.reader import end_offsets

    # An admin client's metadata request would auto-create a mistyped topic on a broker
    # with auto.create.topics.enable (Kafka's default); a read-only tool must not.
    ends = end_offsets({**conf, "allow.auto.create.topics": False}, topic, committed_only=True)
    if not ends:
        raise ConfigError("--topic", f"topic {topic!r} does not exist")
    if sample is None:
        return ends, None
    quota = math.ceil(sample / len(ends))
    return ends, {p: max(end - quota, 0) for p, end in ends.items()}


def read_values(
    conf: dict[str, Any],
    topic: str,
    *,
    sample: int | None,
    timeout: float,
    progress: ProgressBar | None = None,
) -> Iterator[list[bytes | None]]:
    """Batches of record values: all up to the current end, or the latest ``sample``."""
    from stream.kafka.reader import read_range

    ends, starts = _plan(conf, topic, sample)
    # Below the low watermark (retention) a start offset is out of range: read from the
    # earliest record that is still there.
    reset: dict[str, Any] = {"auto.offset.reset": "earliest"}
    batches = read_range(conf, topic, ends, starts, timeout=timeout, **reset)
    done = 0
    try:
        for batch in batches:
            values = [m.value() for m in batch]
            if sample is not None and done + len(values) > sample:
                values = values[: sample - done]
            done += len(values)
            yield values
            if progress is not None:
                progress.update(done)
            if sample is not None and done >= sample:
                break
    finally:
        close = getattr(batches, "close", None)  # a generator: closing it closes the consumer
        if close is not None:
            close()
        if progress is not None:
            progress.finish(done)


def expected_records(conf: dict[str, Any], topic: str, sample: int | None) -> int:
    ends, starts = _plan(conf, topic, sample)
    total = int(sum(end - (starts or {}).get(p, 0) for p, end in ends.items()))
    return min(total, sample) if sample is not None else total


# -- commands ---------------------------------------------------------------------------


@friendly_errors
def run_infer(args: argparse.Namespace) -> int:
    import msgspec

    from stream.schema import compile_json_schema
    from stream.schema.infer import SchemaInferrer

    quiet_librdkafka()
    conf = settings_from_args(args).kafka_client_config()
    try:
        inferrer = SchemaInferrer(required_ratio=args.required_ratio, max_enum=args.max_enum)
    except ValueError as exc:
        from stream.errors import ConfigError

        raise ConfigError("--required-ratio", str(exc)) from None
    not_json = 0
    for values in read_values(conf, args.topic, sample=args.sample, timeout=args.timeout):
        for value in values:
            try:
                inferrer.add(msgspec.json.decode(value or b""))
            except msgspec.DecodeError:
                not_json += 1
    if inferrer.records == 0:
        from stream.errors import StreamError

        raise StreamError(f"no JSON object records in {args.topic}; nothing to infer from")
    schema = inferrer.schema(
        title=f"{args.topic} events",
        description=f"inferred by `stream schema infer` from {inferrer.records:,} records",
    )
    compile_json_schema(schema, source="inferred schema")  # what we print must compile
    print(json.dumps(schema, indent=2))
    skipped = inferrer.skipped + not_json
    note = f" ({skipped:,} records skipped: not JSON objects)" if skipped else ""
    print(
        f"stream: inferred from {inferrer.records:,} records of {args.topic}{note}",
        file=sys.stderr,
    )
    return 0


@friendly_errors
def run_check(args: argparse.Namespace) -> int:
    from stream.schema import load_schema_file
    from stream.schema.check import SchemaCheck

    quiet_librdkafka()
    compiled = load_schema_file(args.schema)
    conf = settings_from_args(args).kafka_client_config()
    total = expected_records(conf, args.topic, args.sample)
    progress = ProgressBar(sys.stderr, "check", total, enabled=not args.no_progress)
    check = SchemaCheck(compiled)
    for values in read_values(
        conf, args.topic, sample=args.sample, timeout=args.timeout, progress=progress
    ):
        for value in values:
            check.add(value)
    if args.json:
        print(json.dumps(check.to_json(args.top), indent=2))
    else:
        print(check.render(args.topic, args.top))
    return EXIT_RUNTIME if check.rejected else 0
