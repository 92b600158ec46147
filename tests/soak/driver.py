"""Soak run: one worker under steady load for a long time, with ever more distinct group keys.

    python -m tests.soak.driver --minutes 30            # `make soak`
    python -m tests.soak.driver --minutes 2 --rate 3000  # what tests/soak/test_soak.py runs

A ``stream worker`` (subprocess, its own pipeline file) consumes a 4-partition input
that this process writes at a steady ``--rate`` (default: half of the capacity measured
first, by draining pre-produced events). Every event has a new ``event_id`` and an
``entity`` drawn from a key space that grows linearly to ``--keys`` (1M) distinct values
over the run; the soak rule groups by ``entity``, so window state sees ever more keys and
the ``max_keys`` cap (``--max-keys``) is what bounds it. Every ``--sample`` seconds the
driver records the worker's RSS, open file descriptors and threads (``/proc``), its lag
(``stream_consumer_lag``), live window keys and cap hits (``/metrics``). After the load
stops the driver waits for the lag to return to 0.

Written to ``--out`` (default ``benchmarks/results/soak-<UTC>/``): ``samples.csv``, ``summary.txt``
(also printed: an ASCII chart of RSS and lag, and the verdicts) and ``soak.png`` (RSS and
lag over time) when matplotlib is available — in this environment or in the bench-only
plot environment ``<STREAM_HOME>/peer-venvs/plot`` that ``stream bench`` builds.

Verdicts (:func:`verdicts`): RSS growth after the warm-up (the first 20% of the run)
under ``--max-rss-growth-mb``; file descriptors and threads after the warm-up constant
up to a spread of 2 (broker connections come and go; asyncio's default executor starts
its threads on demand, one more the first time two calls overlap); lag
bounded while loaded (below ``--max-lag``) and back to 0 at the end.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from stream.observability.scrape import scrape
from tests.support.pipeline import REPO, PipelineTopics, WorkerProcess

#: The soak pipeline: the bundled schema and enrichment, one rule grouping by the growing
#: key. It never fires (the threshold is out of reach): it exists to hold window state.
#: The idle timeout is short (5 s, as in the demo pipeline) on purpose: batches queue
#: inside the worker for seconds under load, and those partitions must not count as idle
#: (events are written in time order per partition, so any late event is that bug).
PIPELINE = """\
correlate:
  max_keys: {max_keys}
  idle_timeout_ms: {idle_timeout_ms}
  late_policy: drop
rules:
  - name: per-entity
    kind: threshold
    group_by: [entity]
    window: {{type: tumbling, size: 10s, grace: 2s}}
    aggregate: count
    when: ">= 1000000000"
"""

WARMUP_SHARE = 0.2
PARTITIONS = 4


@dataclass
class SoakSample:
    t: float  # seconds since the load started
    produced: int
    distinct_keys: int
    rss_mb: float
    fds: int
    threads: int
    lag: float
    state_keys: float
    cap_hits: float
    late: float = 0.0


@dataclass
class SoakResult:
    rate: int
    seconds: float
    keys: int
    max_keys: int
    capacity: float | None
    idle_timeout_ms: int = 5_000
    #: 1-minute load average of the machine when the load started and when it stopped.
    load_avg: tuple[float, float] | None = None
    samples: list[SoakSample] = field(default_factory=list)
    drained_s: float | None = None
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.checks.values())


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, open file descriptors, threads) of a process, from /proc."""
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


def event(i: int, key: int, now_ms: int) -> bytes:
    return (
        b'{"event_id":"s-%d","type":"http.request","source":"svc-%d","timestamp":%d,'
        b'"severity":"info","entity":"k-%d","value":1.5}' % (i, i % 50, now_ms, key)
    )


class Load:
    """Writes ``rate`` events/s in 10 ms steps; the key space grows linearly to ``keys``."""

    def __init__(self, bootstrap: str, topic: str, rate: int, seconds: float, keys: int) -> None:
        self.topic = topic
        self.rate = rate
        self.seconds = seconds
        self.keys = keys
        self.produced = 0
        self.distinct = 1
        self._cursor = -1
        self.stop = threading.Event()
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 10, "compression.type": "lz4"}
        )
        self._thread = threading.Thread(target=self._run, name="soak-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        producer, topic = self._producer, self.topic
        started = time.monotonic()
        while not self.stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= self.seconds:
                break
            due = int(elapsed * self.rate)
            self.distinct = max(1, min(self.keys, int(self.keys * elapsed / self.seconds)))
            now_ms = int(time.time() * 1000)
            distinct = self.distinct
            while self.produced < due:
                i = self.produced
                # A cursor walking the whole key space round and round (it grows under the
                # cursor): a window holds min(key space, events per window) distinct keys.
                # (``i % distinct`` did not: with the modulus growing a little every step,
                # consecutive events reused a few hundred keys and the cap was never reached.)
                key = self._cursor = (self._cursor + 1) % distinct
                try:
                    producer.produce(topic, event(i, key, now_ms), b"k-%d" % key)
                except BufferError:
                    producer.poll(0.05)
                    continue
                self.produced += 1
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(60)

    def join(self) -> None:
        self._thread.join()


def measure_capacity(
    topics: PipelineTopics, home: Path, pipeline: Path, events: int = 300_000
) -> float:
    """Events/s one worker running the soak pipeline drains from a backlog (first to last
    consumed sample), in the same run as the soak: the machine is shared, its load varies."""
    producer = Producer({"bootstrap.servers": topics.bootstrap, "linger.ms": 20})
    now_ms = int(time.time() * 1000)
    for i in range(events):
        while True:
            try:
                # every key distinct: what the soak's key space costs, not a cheap 1000 keys
                producer.produce(topics.input, event(i, i, now_ms), b"k-%d" % i)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    worker = WorkerProcess(topics, home, args=["--config", str(pipeline)])
    try:
        worker.wait_ready(timeout=90)
        first: tuple[float, float] | None = None
        last = (time.monotonic(), 0.0)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            sample = scrape(worker.url("/metrics"))
            consumed = 0.0 if sample is None else sample.total("stream_events_consumed_total")
            now = time.monotonic()
            if consumed > 0 and first is None:
                first = (now, consumed)
            last = (now, consumed)
            if consumed >= events:
                break
            time.sleep(0.5)
        assert first is not None and last[0] > first[0], "the worker consumed nothing"
        return (last[1] - first[1]) / (last[0] - first[0])
    finally:
        worker.stop()


def run_soak(
    bootstrap: str,
    home: Path,
    *,
    seconds: float,
    rate: int | None,
    keys: int,
    max_keys: int | None,
    sample_every: float,
    idle_timeout_ms: int = 5_000,
    drain_timeout: float = 120.0,
    say: object = print,
) -> SoakResult:
    home.mkdir(parents=True, exist_ok=True)
    pipeline = home / "soak-pipeline.yaml"
    cap = max_keys or 200_000  # while measuring: every key distinct, the cap is soon full
    pipeline.write_text(PIPELINE.format(max_keys=cap, idle_timeout_ms=idle_timeout_ms))
    capacity = None
    if rate is None:
        fresh = PipelineTopics(bootstrap, partitions=PARTITIONS).create()
        capacity = measure_capacity(fresh, home, pipeline)
        rate = max(1000, int(capacity / 2))
        say(f"measured capacity {capacity:,.0f} events/s: soaking at {rate:,}/s")  # type: ignore[operator]
    if max_keys is None:
        # Half of what a 10 s window would hold: once the key space outgrows it, the cap
        # (not the window) bounds the state, at whatever rate was measured.
        max_keys = max(1_000, rate * 5)
    pipeline.write_text(PIPELINE.format(max_keys=max_keys, idle_timeout_ms=idle_timeout_ms))
    topics = PipelineTopics(bootstrap, partitions=PARTITIONS).create()
    result = SoakResult(rate, seconds, keys, max_keys, capacity, idle_timeout_ms)
    load_start = 0.0
    worker = WorkerProcess(topics, home, args=["--config", str(pipeline)])
    try:
        worker.wait_ready(timeout=90)
        load = Load(bootstrap, topics.input, rate, seconds, keys)
        started = time.monotonic()
        load_start = os.getloadavg()[0]
        load.start()
        next_sample = started
        drained_at = None
        while True:
            now = time.monotonic()
            if now < next_sample:
                time.sleep(min(0.2, next_sample - now))
                continue
            next_sample += sample_every
            assert worker.proc.poll() is None, f"the worker died:\n{worker.log()}"
            rss, fds, threads = proc_stats(worker.proc.pid)
            sample = scrape(worker.url("/metrics"))
            lag = sample.total("stream_consumer_lag") if sample else float("nan")
            result.samples.append(
                SoakSample(
                    t=round(now - started, 1),
                    produced=load.produced,
                    distinct_keys=load.distinct,
                    rss_mb=round(rss, 1),
                    fds=fds,
                    threads=threads,
                    lag=lag,
                    state_keys=sample.total("stream_window_state_keys") if sample else 0.0,
                    cap_hits=sample.total("stream_window_state_cap_hits_total") if sample else 0.0,
                    late=sample.total("stream_late_events_total") if sample else 0.0,
                )
            )
            loaded = now - started < seconds
            if not loaded and result.load_avg is None:
                result.load_avg = (load_start, os.getloadavg()[0])
            if not loaded and load.produced and lag == 0 and drained_at is None:
                drained_at = now
                result.drained_s = round(now - started - seconds, 1)
            if not loaded and (drained_at is not None or now - started > seconds + drain_timeout):
                break
        load.stop.set()
        load.join()
    finally:
        code = worker.stop()
        if code != 0:
            say(f"worker exited {code}:\n{worker.log()}")  # type: ignore[operator]
    return result


def verdicts(result: SoakResult, *, max_rss_growth_mb: float, max_lag: float) -> None:
    loaded = [s for s in result.samples if s.t <= result.seconds]
    steady = [s for s in loaded if s.t >= result.seconds * WARMUP_SHARE] or loaded
    first, last = steady[0], steady[-1]
    growth = last.rss_mb - min(s.rss_mb for s in steady[:3])
    peak = max(s.rss_mb for s in steady)
    fds = [s.fds for s in steady]
    threads = [s.threads for s in steady]
    worst_lag = max(s.lag for s in loaded)
    checks = result.checks
    checks["rss"] = (
        growth <= max_rss_growth_mb,
        f"RSS {first.rss_mb:.0f} -> {last.rss_mb:.0f} MB after warm-up (growth {growth:+.0f} MB, "
        f"peak {peak:.0f} MB; limit {max_rss_growth_mb:.0f} MB)",
    )
    checks["fds"] = (
        max(fds) - min(fds) <= 2,
        f"file descriptors {min(fds)}..{max(fds)} after warm-up",
    )
    checks["threads"] = (
        max(threads) - min(threads) <= 2,
        f"threads {min(threads)}..{max(threads)} after warm-up",
    )
    checks["lag bounded"] = (
        worst_lag <= max_lag,
        f"worst lag under load {worst_lag:,.0f} (limit {max_lag:,.0f})",
    )
    checks["lag back to 0"] = (
        result.drained_s is not None,
        f"lag 0 {result.drained_s}s after the load stopped"
        if result.drained_s is not None
        else "lag never returned to 0",
    )
    late = max((s.late for s in result.samples), default=0.0)
    checks["no late events"] = (
        late == 0,
        f"{late:,.0f} events late (idle timeout {result.idle_timeout_ms:,} ms; the input is "
        "in time order per partition, so windows closed under queued events if not 0)",
    )


def ascii_chart(values: list[float], width: int = 60, height: int = 8, label: str = "") -> str:
    """A small column chart: one column per bucket of samples (the bucket's maximum)."""
    if not values:
        return f"{label}: no samples"
    buckets = [
        max(
            values[
                i * len(values) // width : max(
                    (i + 1) * len(values) // width, i * len(values) // width + 1
                )
            ]
        )
        for i in range(min(width, len(values)))
    ]
    top = max(buckets) or 1.0
    rows = []
    for level in range(height, 0, -1):
        cut = top * (level - 0.5) / height
        rows.append("".join("#" if v >= cut else " " for v in buckets))
    return "\n".join(
        [f"{label} (max {top:,.0f})", *(f"  |{r}" for r in rows), "  +" + "-" * len(buckets)]
    )


def summary(result: SoakResult) -> str:
    s = result.samples
    lines = [
        f"soak: {result.seconds / 60:.1f} min at {result.rate:,} events/s"
        + (f" (half of the measured {result.capacity:,.0f}/s)" if result.capacity else "")
        + f", {s[-1].produced if s else 0:,} events, distinct keys growing to "
        f"{max((x.distinct_keys for x in s), default=0):,} (max_keys {result.max_keys:,}); "
        f"live window keys peak {max((x.state_keys for x in s), default=0):,.0f}, cap hits "
        f"{max((x.cap_hits for x in s), default=0):,.0f}, late (per rule) "
        f"{max((x.late for x in s), default=0):,.0f}; idle timeout {result.idle_timeout_ms:,} ms"
        + (
            f"; load average {result.load_avg[0]:.1f} -> {result.load_avg[1]:.1f}"
            if result.load_avg
            else ""
        ),
        ascii_chart([x.rss_mb for x in s], label="RSS MB over time"),
        ascii_chart([x.lag for x in s], label="lag (records) over time"),
    ]
    for name, (ok, text) in result.checks.items():
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: {text}")
    return "\n".join(lines)


def write_outputs(result: SoakResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    samples = out / "samples.csv"
    with samples.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(result.samples[0])))
        writer.writeheader()
        for s in result.samples:
            writer.writerow(asdict(s))
    written.append(samples)
    text = out / "summary.txt"
    text.write_text(summary(result) + "\n")
    written.append(text)
    meta = out / "soak.json"
    meta.write_text(
        json.dumps(
            {k: v for k, v in asdict(result).items() if k != "samples"} | {"passed": result.passed},
            indent=2,
        )
    )
    written.append(meta)
    png = draw_plot(samples, out / "soak.png")
    if png is not None:
        written.append(png)
    return written


def draw_plot(samples: Path, png: Path) -> Path | None:
    """``soak.png`` with matplotlib: here if installed, else in the bench plot environment."""
    script = [str(Path(__file__).with_name("plot.py")), str(samples), str(png)]
    if importlib.util.find_spec("matplotlib") is not None:
        command = [sys.executable, *script]
    else:
        try:  # the bench-only plot environment (built once, like `stream bench` does)
            from benchmarks.peers import envs

            python = envs.python_env("plot", say=print).command[0]
        except Exception as exc:  # no network for pip, say: the CSV and summary remain
            print(f"no matplotlib here and no plot environment ({exc}): CSV and ASCII only")
            return None
        command = [python, *script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        print(f"plot failed: {done.stderr.strip()[-500:]}")
        return None
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak.driver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, help="events/s (default: half the measured capacity)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="distinct keys at the end")
    parser.add_argument(
        "--max-keys", type=int, help="correlate.max_keys (default: 5 s of input, half a window)"
    )
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--idle-timeout-ms", type=int, default=5_000, help="correlate.idle_timeout_ms"
    )
    parser.add_argument("--max-rss-growth-mb", type=float, default=100.0)
    parser.add_argument("--max-lag", type=float, default=None, help="default: 10 s of input")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO / "benchmarks" / "results" / f"soak-{stamp}"
    bootstrap = os.environ.get("STREAM_BOOTSTRAP_SERVERS")
    if not bootstrap:
        from stream import localbroker

        bootstrap = localbroker.start(9092)
    result = run_soak(
        bootstrap,
        out,
        seconds=args.minutes * 60,
        rate=args.rate,
        keys=args.keys,
        max_keys=args.max_keys,
        sample_every=args.sample,
        idle_timeout_ms=args.idle_timeout_ms,
    )
    verdicts(
        result,
        max_rss_growth_mb=args.max_rss_growth_mb,
        max_lag=args.max_lag if args.max_lag is not None else result.rate * 10,
    )
    for path in write_outputs(result, out):
        print(f"wrote {path}")
    print(summary(result))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
