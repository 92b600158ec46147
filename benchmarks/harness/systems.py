"""The systems under test, each as subprocesses the harness can watch and stop.

* ``WorkerGroup``: one or more ``stream worker`` processes in one consumer group,
  configured through ``STREAM_*`` variables as operators run them; progress is
  ``stream_events_consumed_total`` scraped from each worker's ``/metrics``.
* ``ProgramSystem``: a program that processes ``--expect`` records and exits
  printing one JSON line (the peers in ``benchmarks.peers`` and the ceiling
  ``benchmarks.harness.ceiling``); progress is records in its output topics.

Every process writes its log to a file in the run directory; a failing row
quotes its tail. Stopping is SIGTERM, then SIGKILL after a grace period, and
only ever touches processes this module started.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.harness.cluster import Cluster, TopicSet
from stream.localbroker.ports import port_is_free
from stream.observability.scrape import scrape

REPO: Final = Path(__file__).resolve().parents[2]
#: Ports for the workers' /metrics servers.
WEB_PORT_RANGE: Final = range(46500, 47000)
STOP_GRACE_S: Final = 30.0
_CONSUMED: Final = "stream_events_consumed_total"
_REBALANCES: Final = "stream_rebalances_total"
_CHECKPOINTS: Final = "stream_checkpoints_total"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository importable, plus ``extra``."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    env.update(extra or {})
    return env


def free_web_port(taken: set[int]) -> int:
    """A free port of ``WEB_PORT_RANGE``, from a random place in it: other benchmark runs
    and tests on the machine use the same range, and the first free port was the one
    they raced for (a worker lost it between this check and its bind: a FAILED row)."""
    start = random.randrange(len(WEB_PORT_RANGE))
    for i in range(len(WEB_PORT_RANGE)):
        port = WEB_PORT_RANGE[(start + i) % len(WEB_PORT_RANGE)]
        if port not in taken and port_is_free(port) and port_is_free(port, "0.0.0.0"):
            taken.add(port)
            return port
    raise OSError(f"no free port in {WEB_PORT_RANGE.start}-{WEB_PORT_RANGE.stop - 1}")


class ChildProcess:
    """One subprocess with its stdout and stderr in files under ``run_dir``."""

    def __init__(self, label: str, argv: Sequence[str], env: Mapping[str, str], run_dir: Path):
        self.label = label
        self.stdout_path = run_dir / f"{label}.out"
        self.log_path = run_dir / f"{label}.log"
        with open(self.stdout_path, "wb") as out, open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(argv), env=dict(env), cwd=REPO, stdout=out, stderr=log, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """SIGTERM (the graceful path), SIGKILL after ``grace`` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log_tail(self, chars: int = 1500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:].strip()


class System(ABC):
    """Something that consumes the input topic and writes the output topics."""

    def __init__(self, name: str, topics: TopicSet, cluster: Cluster) -> None:
        self.name = name
        self.topics = topics
        self.cluster = cluster
        self.children: list[ChildProcess] = []

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    @property
    def output_topics(self) -> tuple[str, ...]:
        """Where each input record ends up exactly once (enriched or dead-lettered)."""
        return (self.topics.enriched, self.topics.dlq)

    def outputs(self) -> int:
        return self.cluster.total(*self.output_topics)

    @abstractmethod
    def progress(self) -> int:
        """Input records handled so far."""

    def crashed(self) -> str | None:
        """Why the system cannot finish (a process exited early), or None."""
        for child in self.children:
            if not child.running():
                return f"{child.label} exited with {child.proc.returncode}: {child.log_tail()}"
        return None

    @abstractmethod
    def finish(self, timeout: float) -> dict[str, Any]:
        """After all input is handled: complete cleanly; facts for the row (may raise
        ``TimeoutError``)."""

    def stop(self) -> list[int]:
        return [c.stop() for c in self.children]

    def kill(self) -> None:
        for child in self.children:
            child.kill()


class WorkerGroup(System):
    """``workers`` ``stream worker`` processes sharing one consumer group."""

    def __init__(
        self,
        name: str,
        topics: TopicSet,
        cluster: Cluster,
        run_dir: Path,
        workers: int = 1,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> None:
        """``config``: a pipeline file (``--config``; the ``STREAM_*`` topic variables
        still name the row's topics); ``env``: more ``STREAM_*`` settings (e.g. the
        processing guarantee); ``label``: names the log files (default ``name``)."""
        super().__init__(name, topics, cluster)
        label = label or name
        taken: set[int] = set()
        self.ports = [free_web_port(taken) for _ in range(workers)]
        home = run_dir / f"{label}-home"
        home.mkdir(exist_ok=True)
        base = {
            "STREAM_BOOTSTRAP_SERVERS": cluster.bootstrap,
            "STREAM_GROUP_ID": topics.group,
            "STREAM_APP_ID": topics.prefix,
            "STREAM_TOPICS__INPUT": topics.input,
            "STREAM_TOPICS__ENRICHED": topics.enriched,
            "STREAM_TOPICS__CORRELATIONS": topics.correlations,
            "STREAM_TOPICS__DLQ": topics.dlq,
            "STREAM_TOPICS__REFERENCE": topics.reference,
            "STREAM_TOPICS__CHANGELOG": topics.changelog,
            "STREAM_HOME": str(home),
            "STREAM_LOG_FORMAT": "text",
            **(env or {}),
        }
        extra = ["--config", str(config)] if config is not None else []
        for i, port in enumerate(self.ports):
            child = child_env({**base, "STREAM_WEB_PORT": str(port)})
            argv = [sys.executable, "-m", "stream.cli", "worker", "--web-port", str(port), *extra]
            self.children.append(ChildProcess(f"{label}-worker{i}", argv, child, run_dir))

    def _scrape(self, path: str = "/metrics") -> list[Any]:
        return [scrape(f"http://127.0.0.1:{port}{path}", timeout=2.0) for port in self.ports]

    def progress(self) -> int:
        return int(sum(s.total(_CONSUMED) for s in self._scrape() if s is not None))

    def ready(self) -> bool:
        """Every worker answers /ready with partitions assigned."""
        import urllib.error
        import urllib.request

        for port in self.ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    body = json.loads(r.read())
            except (OSError, ValueError, urllib.error.HTTPError):
                return False
            if not body.get("ready") or not body.get("assigned_partitions"):
                return False
        return True

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait until the group has committed the whole input, then stop gracefully."""
        deadline = time.monotonic() + timeout
        while not self.cluster.fully_committed(self.topics.group, self.topics.input):
            if reason := self.crashed():
                raise RuntimeError(reason)
            if time.monotonic() > deadline:
                raise TimeoutError("offsets not committed to the end of the input")
            time.sleep(0.5)
        samples = [s for s in self._scrape() if s is not None]
        facts: dict[str, Any] = {
            "committed_to_end": True,
            "rebalances": int(sum(s.total(_REBALANCES) for s in samples)),
            "checkpoints": int(sum(s.total(_CHECKPOINTS) for s in samples)),
        }
        # what each checkpoint cost the loop (exactly_once: one transaction commit each)
        for metric, key in (
            ("stream_checkpoint_duration_seconds", "checkpoint_seconds"),
            ("stream_commit_duration_seconds", "commit_seconds"),
        ):
            count = sum(s.total(f"{metric}_count") for s in samples)
            total = sum(s.total(f"{metric}_sum") for s in samples)
            if count:
                facts[key] = {
                    "count": int(count),
                    "mean": round(total / count, 4),
                    "sum": round(total, 3),
                }
        facts["exit_codes"] = self.stop()
        return facts


class ProgramSystem(System):
    """A program that handles ``--expect`` records, prints a JSON line and exits (a peer
    pipeline or the ceiling). ``command`` is its argv before ``args``: ``python -m
    <module>`` (this interpreter, or a peer's own virtual environment) or ``java ... -jar``."""

    def __init__(
        self,
        name: str,
        topics: TopicSet,
        cluster: Cluster,
        run_dir: Path,
        command: Sequence[str],
        args: Sequence[str],
        output_topics: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(name, topics, cluster)
        self._outputs = output_topics
        argv = [*command, *args]
        # the peers keep state (RocksDB, Faust data) in temporary directories: inside
        # the run directory they are deleted with it
        env = child_env({"TMPDIR": str(run_dir)})
        self.children.append(ChildProcess(name, argv, env, run_dir))

    @property
    def output_topics(self) -> tuple[str, ...]:
        return self._outputs or super().output_topics

    def progress(self) -> int:
        return self.outputs()

    def crashed(self) -> str | None:
        child = self.children[0]
        code = child.proc.poll()
        if code not in (None, 0):
            return f"{child.label} exited with {code}: {child.log_tail()}"
        return None

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the program to exit by itself; its JSON line."""
        child = self.children[0]
        try:
            code = child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{child.label} did not exit after its last record") from None
        if code != 0:
            raise RuntimeError(f"{child.label} exited with {code}: {child.log_tail()}")
        return program_result(child)


def program_result(child: ChildProcess) -> dict[str, Any]:
    """The last JSON object line a program printed."""
    for line in reversed(child.stdout().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"{child.label} printed no result line: {child.log_tail()}")


def python_module(module: str) -> tuple[str, ...]:
    """The command that runs ``module`` with this interpreter."""
    return (sys.executable, "-m", module)


def peer_args(
    bootstrap: str, topics: TopicSet, expect: int, reference_json: Path, timeout: float
) -> list[str]:
    """The command line every ``benchmarks.peers`` module takes."""
    return [
        *("--bootstrap", bootstrap, "--input", topics.input, "--enriched", topics.enriched),
        *("--correlations", topics.correlations, "--dlq", topics.dlq),
        *("--group", topics.group, "--expect", str(expect)),
        *("--reference-json", str(reference_json), "--timeout", f"{timeout:g}"),
    ]


def kstreams_args(
    bootstrap: str,
    topics: TopicSet,
    expect: int,
    timeout: float,
    threads: int,
    warmup_records: int,
    warmup_input: str,
    state_dir: Path,
) -> list[str]:
    """The command line of the Kafka Streams peer (``benchmarks/peers/kstreams``): it
    enriches from a GlobalKTable over the reference topic, not from a JSON file, and first
    runs a JIT warm-up pass over ``warmup_records`` records of ``warmup_input``."""
    return [
        *("--bootstrap", bootstrap, "--input", topics.input, "--enriched", topics.enriched),
        *("--correlations", topics.correlations, "--dlq", topics.dlq),
        *("--reference", topics.reference, "--group", topics.group, "--expect", str(expect)),
        *("--threads", str(threads), "--warmup-records", str(warmup_records)),
        *("--warmup-input", warmup_input),
        *("--state-dir", str(state_dir), "--timeout", f"{timeout:g}"),
    ]
