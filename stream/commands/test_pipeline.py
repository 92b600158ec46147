"""``stream test-pipeline``: run a pipeline file over sample records, no broker needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stream.commands.common import friendly_errors

HELP = """\
Run a pipeline file over records from a file, in-process (stream.testing.PipelineDriver:
the same chain and output bytes as a worker, without Kafka). Each join needs a table:
--tables NAME=FILE, where FILE holds one {"key": ..., "value": {...}} per line.

examples:
  stream test-pipeline --config orders.yaml --input sample.ndjson \\
      --tables customer=customers.ndjson --tables fx=rates.ndjson
  stream test-pipeline --config orders.yaml --input sample.ndjson --advance 15m --json
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "test-pipeline",
        help="run a pipeline file over sample records without a broker",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="the pipeline file")
    parser.add_argument(
        "--input", required=True, help="input records: one JSON document (or bad line) per line"
    )
    parser.add_argument(
        "--tables",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a join's values, NDJSON lines of {key, value}",
    )
    parser.add_argument("--now", type=int, default=None, help="wall clock, epoch ms")
    parser.add_argument(
        "--advance", default=None, help="then move the wall clock (e.g. 90s, 15m) to close windows"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per output record")
    parser.set_defaults(func=friendly_errors(run))


def _read_table(spec: str) -> tuple[str, dict[str, Any]]:
    import orjson

    from stream.errors import ConfigError

    name, sep, file = spec.partition("=")
    if not sep or not name or not file:
        raise ConfigError("--tables", f"expected NAME=FILE, got {spec!r}")
    rows: dict[str, Any] = {}
    try:
        lines = Path(file).read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError("--tables", f"cannot read {file}: {exc.strerror}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            rows[str(row["key"])] = row["value"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(
                "--tables", f'{file}:{n}: expected {{"key": ..., "value": {{...}}}}'
            ) from None
    return name, rows


def run(args: argparse.Namespace) -> int:
    import orjson

    from stream.errors import ConfigError
    from stream.testing import PipelineDriver
    from stream.windows.spec import parse_duration

    tables = dict(_read_table(spec) for spec in args.tables)
    try:
        driver = PipelineDriver(args.config, tables=tables, now_ms=args.now)
    except ValueError as exc:
        raise ConfigError("--tables", str(exc)) from None
    try:
        lines = Path(args.input).read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError("--input", f"cannot read {args.input}: {exc.strerror}") from None
    for line in lines:
        if line.strip():
            driver.send(line)
    out = driver.run()
    if args.advance:
        try:
            later = driver.advance(ms=parse_duration(args.advance))
        except ValueError as exc:
            raise ConfigError("--advance", str(exc)) from None
        out.correlations += later.correlations
    records = out.all()
    if args.json:
        for r in records:
            sys.stdout.buffer.write(
                orjson.dumps(
                    {
                        "topic": r.topic,
                        "key": r.key.decode(errors="replace") if r.key else None,
                        "value": _value(r.value),
                        "headers": {k: v.decode(errors="replace") for k, v in r.headers},
                    }
                )
                + b"\n"
            )
        return 0
    extra = sum(len(v) for v in out.extra.values())
    print(
        f"{len(lines)} records in: {len(out.enriched)} enriched, {len(out.dlq)} dead-lettered, "
        f"{len(out.correlations)} correlations, {extra} extra"
    )
    print(f"{'topic':<24} {'key':<16} value / reason")
    for r in records:
        reason = r.header("dlq.error.class")
        detail = (
            f"{reason.decode()}: {(r.header('dlq.error.message') or b'').decode()}"
            if reason
            else (r.value or b"").decode(errors="replace")
        )
        key = (r.key or b"").decode(errors="replace")
        print(f"{r.topic:<24} {key[:16]:<16} {detail[:160]}")
    return 0


def _value(value: bytes | None) -> Any:
    import orjson

    try:
        return orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return (value or b"").decode(errors="replace")
