"""``stream bench``: measure the worker against the ceiling and the Python peers.

Thin on purpose: flags and output here, the harness in ``benchmarks.harness``
(imported when the command runs, so ``stream --help`` stays fast and the
``stream`` package never imports ``benchmarks`` at load time).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

DESCRIPTION = """\
Against one broker and the same pre-produced input, run in turn:

  ceiling          consume + produce the same records, no processing (client + broker limit)
  stream           one `stream worker`: validate, enrich, correlate, DLQ, commits
  stream-eos       the same worker with STREAM_PROCESSING_GUARANTEE=exactly_once (outputs
                   counted read_committed)
  stream-x2        two workers in one consumer group (group throughput, no loss)
  quix             the same pipeline in Quix Streams (benchmarks/peers/quix_pipeline.py)
  faust-per-event  the same pipeline as per-event Faust agents (benchmarks/peers/faust_per_event.py)
  kstreams         the same pipeline in Kafka Streams (benchmarks/peers/kstreams; Java 17+ and
                   Maven), after a JIT warm-up pass, best of 1 and 2 stream threads
  stream-avro      with --format avro, after `stream`: the worker with `format: avro` over the
                   same events framed as Avro (own input topic; JSON output; throughput and
                   CPU only). Needs a schema registry: $STREAM_SCHEMA_REGISTRY_URL, or a
                   local one started for the run as `stream registry start` does (Java 21+)

and report for each: events/s, CPU seconds per million events, peak RSS, and
end-to-end latency p50/p99 (input produce time -> output append time) at a fixed
offered rate (a PNG of the per-second p99 next to the JSON when matplotlib is
available, in a bench-only virtual environment otherwise). Every row's outputs
are checked against the generator's ground truth (enriched + dead-lettered ==
input); a wrong count marks the row FAILED, a row past --timeout is killed and
marked TIMEOUT.

Each peer runs in its own environment, built on first use and cached in
$STREAM_HOME (default ./.stream): a virtual environment per Python peer, the
Kafka Streams jar built with `mvn package`. Without Java or Maven the kstreams
row is skipped.

The broker is $STREAM_BOOTSTRAP_SERVERS (or --bootstrap-servers); without one a
private local Kafka is started and stopped. Results: a table on the terminal and
JSON in benchmarks/results/bench-<UTC>.json (`stream plan` reads the 'stream' row).

Workloads (--workload): `observability` (the bundled pipeline; every row) and
`orders` (stream/pipelines/orders.yaml: JSON Schema with a nested object and an
array, a join on a customer topic the harness seeds, a join on an HTTP fx service
the harness serves, a derived CEL field, a hopping window). The orders rows are
named orders/ceiling, orders/stream, orders/stream-eos; the peers implement the
observability pipeline only and do not run on orders.

examples:
  stream bench                                   # 1M events, 8 partitions, 10-20 min
  stream bench --events 200000 --only stream,quix
  stream bench --skip faust-per-event --latency-rate 20000 --json
  stream bench --events 200000 --workload observability,orders --only ceiling,stream,stream-eos
  stream bench --events 300000 --only stream --format avro --latency-rate 0   # Avro vs JSON
"""


ROWS_HELP = "ceiling, stream, stream-eos, stream-x2, quix, faust-per-event, kstreams"
DEFAULT_LATENCY_ROWS = "ceiling,stream,quix,faust-per-event,kstreams"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the worker against the ceiling and the Python peers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="input events (default: %(default)s)"
    )
    parser.add_argument(
        "--partitions", type=int, default=8, help="input partitions (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=50_000,
        help="offered events/s for the latency runs; 0 skips them (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=20,
        help="seconds of offered load per latency run (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-rows",
        default=DEFAULT_LATENCY_ROWS,
        metavar="ROW,...",
        help="rows that also get a latency run; peers only if they sustain the rate; "
        "stream-eos (opt-in) is timed to read_committed visibility (default: %(default)s)",
    )
    parser.add_argument(
        "--workload",
        metavar="NAME,...",
        default="observability",
        help="observability, orders, or both comma-separated (or 'all'); the orders "
        "workload runs the ceiling, stream and stream-eos rows (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        metavar="FORMAT,...",
        default="",
        help="input formats measured beside JSON, each a row after `stream`: avro "
        "(row stream-avro; needs a schema registry, started for the run if "
        "$STREAM_SCHEMA_REGISTRY_URL is not set)",
    )
    parser.add_argument(
        "--eos-commit-interval",
        type=float,
        metavar="S",
        help="STREAM_COMMIT_INTERVAL of the stream-eos row: one transaction per checkpoint "
        "(default: the worker's, 1 s)",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="do not draw the latency timeline PNG"
    )
    parser.add_argument("--only", metavar="ROW,...", help=f"run only these rows ({ROWS_HELP})")
    parser.add_argument("--skip", metavar="ROW,...", help="do not run these rows")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds per row (throughput, and latency) before it is killed; a row without "
        "progress for 180 s is killed sooner (default: %(default)s)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka to use (default: $STREAM_BOOTSTRAP_SERVERS, else a private local broker)",
    )
    parser.add_argument(
        "--results-dir",
        metavar="DIR",
        help="where the JSON goes (default: benchmarks/results in the repository)",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="generator seed (default: %(default)s)"
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="do not delete the run's topics at the end"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the JSON document on stdout (table to stderr)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run_bench_command)


def _import_checkout_benchmarks() -> None:
    """Make the source checkout's ``benchmarks`` package importable.

    The ``stream`` console script of an editable install puts only ``stream`` and
    ``connectors`` on the path (``benchmarks/`` is not packaged), so `make bench`
    would fail outside the repository's working directory without this.
    """
    import sys
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "benchmarks" / "harness").is_dir() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))


def run_bench_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream.commands.common import fail
    from stream.errors import ConfigError, StreamError

    _import_checkout_benchmarks()
    try:
        from benchmarks.harness import (
            DEFAULT_RESULTS_DIR,
            BenchOptions,
            Console,
            render_notes,
            render_table,
            run_bench,
            select_rows,
            select_workloads,
        )
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("benchmarks"):
            raise
        return fail("stream bench needs the benchmarks/ directory of a source checkout")

    try:
        options = BenchOptions(
            events=args.events,
            partitions=args.partitions,
            latency_rate=args.latency_rate,
            latency_seconds=args.latency_seconds,
            rows=select_rows(args.only, args.skip),
            latency_rows=select_rows(args.latency_rows, None) if args.latency_rows else (),
            timeout=args.timeout,
            bootstrap=args.bootstrap_servers,
            results_dir=Path(args.results_dir) if args.results_dir else DEFAULT_RESULTS_DIR,
            seed=args.seed,
            keep_topics=args.keep_topics,
            command=shlex.join(["stream", *sys.argv[1:]]) if sys.argv else "stream bench",
            workloads=select_workloads(args.workload),
            eos_commit_interval=args.eos_commit_interval,
            plot=not args.no_plot,
            formats=tuple(
                f.strip() for f in args.format.split(",") if f.strip() != "json" and f.strip()
            ),
        )
        options.check()
    except ConfigError as exc:
        return fail(str(exc), 2)
    try:
        result = run_bench(options, Console(sys.stderr, quiet=args.quiet))
    except StreamError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    table = render_table(result.rows)
    notes = render_notes(result.rows)
    out = sys.stderr if args.json else sys.stdout
    print(f"\n{table}\n", file=out)
    if notes:
        print(notes, file=out)
    for note in result.notes:
        print(f"- {note}", file=out)
    print(f"\nresults: {result.path}", file=out)
    if args.json:
        print(json.dumps(result.document, indent=2))
    return 0 if result.ok else 1
