"""The demo orchestration behind ``stream demo``.

It only composes the product's own commands as child processes — ``stream
topics create``, ``stream worker``, ``stream loadgen`` — so what the demo shows
is exactly what an operator would run, and reads the workers' ``/metrics`` for
its summary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from stream.errors import FatalError
from stream.observability.scrape import Sample, scrape
from stream.pipelines import DEMO_PIPELINE

#: Sources the load generator draws from; the reference data covers most of them.
DEMO_SOURCES = 50


@dataclass(frozen=True)
class DemoOptions:
    duration: float
    rate: int
    workers: int
    partitions: int
    invalid_ratio: float
    port: int
    web_port: int


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.o = options
        self.children: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)
        #: Where the demo pipeline (late_policy: topic) writes late events.
        self._late_topic = self.env.get("STREAM_TOPICS__LATE") or (
            f"{self.env.get('STREAM_TOPICS__INPUT', 'events')}.late"
        )

    def _stream(self, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "stream.cli", *args]
        proc = subprocess.Popen(cmd, env=self.env, **kwargs)  # type: ignore[call-overload]
        self.children.append(proc)
        return proc  # type: ignore[no-any-return]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "stream.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise FatalError(f"`stream {' '.join(args)}` failed: {result.stderr.strip()}")

    def run(self) -> int:
        bootstrap = os.environ.get("STREAM_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from stream import localbroker

            print(f"starting a local Kafka broker on 127.0.0.1:{self.o.port} ...", flush=True)
            bootstrap = localbroker.start(self.o.port)
        self.env["STREAM_BOOTSTRAP_SERVERS"] = bootstrap
        print(f"broker: {bootstrap}; pipeline: {DEMO_PIPELINE}", flush=True)
        self._run("topics", "create", "--partitions", str(self.o.partitions))
        from stream.loadgen.broker import seed_reference_data

        seed_reference_data(
            bootstrap,
            os.environ.get("STREAM_TOPICS__REFERENCE", "reference.services"),
            DEMO_SOURCES,
        )
        ports = [self.o.web_port + i for i in range(self.o.workers)]
        home = os.environ.get("STREAM_HOME", ".stream")
        os.makedirs(home, exist_ok=True)
        logs = open(os.path.join(home, "demo-workers.log"), "ab")  # noqa: SIM115 - children write to it
        for port in ports:
            self._stream(
                "worker",
                "--config",
                str(DEMO_PIPELINE),
                "--web-port",
                str(port),
                stdout=logs,
                stderr=logs,
            )
        print(f"workers: {len(ports)} (metrics on ports {ports}; logs in {logs.name})", flush=True)
        loadgen_args = [
            "loadgen",
            "--rate",
            str(self.o.rate),
            "--invalid-ratio",
            str(self.o.invalid_ratio),
            "--sources",
            str(DEMO_SOURCES),
        ]
        if self.o.duration:
            loadgen_args += ["--duration", str(self.o.duration)]
        else:
            loadgen_args += ["--duration", str(10**9)]
        loadgen = self._stream(*loadgen_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(
            f"load generator: {self.o.rate} events/s, {self.o.invalid_ratio:.0%} invalid. "
            "Ctrl-C to stop.\n",
            flush=True,
        )
        try:
            self._watch(ports, loadgen)
        except KeyboardInterrupt:
            pass
        finally:
            final = self._stop(ports)
        if final is not None:
            print("\nfinal:", self._line(final, 0.0))
        print(
            "broker still running: stop it with `stream broker stop`"
            if not os.environ.get("STREAM_BOOTSTRAP_SERVERS")
            else ""
        )
        return 0

    def _collect(self, ports: list[int]) -> Sample | None:
        merged: Sample | None = None
        for port in ports:
            sample = scrape(f"http://127.0.0.1:{port}/metrics")
            if sample is not None:
                merged = sample if merged is None else merged.merge(sample)
        return merged

    def _watch(self, ports: list[int], loadgen: subprocess.Popen[bytes]) -> None:
        started = time.monotonic()
        last_in, last_t = 0.0, time.monotonic()
        tty = sys.stdout.isatty()
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            if self.o.duration and now - started > self.o.duration + 3:
                return
            sample = self._collect(ports)
            if sample is None:
                print("waiting for workers to start ...", end="\r" if tty else "\n", flush=True)
                continue
            consumed = sample.total("stream_events_consumed_total")
            rate = (consumed - last_in) / (now - last_t)
            last_in, last_t = consumed, now
            line = self._line(sample, rate)
            print(("\r\033[K" + line) if tty else line, end="" if tty else "\n", flush=True)
            if loadgen.poll() is not None and self.o.duration == 0:
                return

    def _line(self, s: Sample, rate: float) -> str:
        # Late events are no failure: they are enriched, and counted apart from the DLQ.
        late = s.total("stream_events_produced_total", topic=self._late_topic)
        return (
            f"in {s.total('stream_events_consumed_total'):>10,.0f} | "
            f"valid {s.total('stream_events_processed_total', stage='validate'):>10,.0f} | "
            f"enriched {s.total('stream_events_processed_total', stage='enrich'):>10,.0f} | "
            f"dlq {s.total('stream_dlq_records_total'):>8,.0f} | "
            f"late {late:>6,.0f} | "
            f"correlations {s.total('stream_correlations_emitted_total'):>6,.0f} | "
            f"lag {s.total('stream_consumer_lag'):>8,.0f} | "
            f"{rate:>9,.0f} ev/s"
        )

    def _stop(self, ports: list[int]) -> Sample | None:
        loadgen, workers = self.children[-1], self.children[:-1]
        for proc in (loadgen, *workers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is loadgen else signal.SIGTERM)
        final = None
        deadline = time.monotonic() + 30
        for proc in workers:
            while proc.poll() is None and time.monotonic() < deadline:
                final = self._collect(ports) or final
                time.sleep(0.5)
            if proc.poll() is None:
                proc.kill()
        if loadgen.poll() is None:
            loadgen.kill()
        return final
