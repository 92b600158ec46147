"""Test support: a pipeline's topic set, worker subprocesses, reading topics to the end.

Workers run as real ``stream worker`` processes (the way operators run them), so
tests exercise the CLI, config loading, the Faust app and signal handling.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_INVALID, Message, Producer

from stream.kafka import reader

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PipelineTopics:
    """Fresh, uniquely named topics for one pipeline under test."""

    bootstrap: str
    partitions: int = 4
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    @property
    def input(self) -> str:
        return f"{self.prefix}.events"

    @property
    def enriched(self) -> str:
        return f"{self.prefix}.enriched"

    @property
    def correlations(self) -> str:
        return f"{self.prefix}.correlations"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def reference(self) -> str:
        return f"{self.prefix}.reference"

    @property
    def group(self) -> str:
        return f"{self.prefix}-workers"

    @property
    def changelog(self) -> str:
        return f"{self.group}-window-state-changelog"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "STREAM_BOOTSTRAP_SERVERS": self.bootstrap,
                "STREAM_GROUP_ID": self.group,
                "STREAM_APP_ID": f"{self.prefix}-app",
                "STREAM_TOPICS__INPUT": self.input,
                "STREAM_TOPICS__ENRICHED": self.enriched,
                "STREAM_TOPICS__CORRELATIONS": self.correlations,
                "STREAM_TOPICS__DLQ": self.dlq,
                "STREAM_TOPICS__REFERENCE": self.reference,
                "STREAM_LOG_FORMAT": "text",
            }
        )
        env.update(extra)
        return env

    def create(self) -> PipelineTopics:
        """Create the topics with ``stream topics create`` (the product's own command)."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "topics",
                "create",
                "--partitions",
                str(self.partitions),
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return self


class WorkerProcess:
    """One ``stream worker`` subprocess with its own metrics port and log file."""

    def __init__(
        self,
        topics: PipelineTopics,
        home: Path,
        *,
        extra_env: dict[str, str] | None = None,
        args: Iterable[str] = (),
    ) -> None:
        self.port = free_port()
        self.log_path = home / f"worker-{self.port}.log"
        env = topics.env(STREAM_HOME=str(home), **(extra_env or {}))
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker", "--web-port", str(self.port), *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 90.0, partitions: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited early:\n{self.log()}"
            try:
                status, body = self.get("/ready")
                if status == 200 and (not partitions or b'"assigned_partitions":[]' not in body):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not stop within {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    n = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    assert producer.flush(60) == 0
    return n


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    return reader.end_offsets({"bootstrap.servers": bootstrap}, topic)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition of ``topic``: ``group``'s committed offset, ``OFFSET_INVALID`` if none."""
    conf = {"bootstrap.servers": bootstrap}
    committed = reader.committed_offsets(conf, group, topic, end_offsets(bootstrap, topic))
    return {p: committed.get(p, OFFSET_INVALID) for p in end_offsets(bootstrap, topic)}


def read_all(
    bootstrap: str, topic: str, *, read_committed: bool = True, timeout: float = 60.0
) -> list[Message]:
    """Every record of ``topic`` from the beginning to its current end."""
    conf = {"bootstrap.servers": bootstrap}
    return reader.read_to_end(conf, topic, read_committed=read_committed, timeout=timeout)


def wait_until(
    predicate, timeout: float = 60.0, interval: float = 0.5, message: str = "condition"
) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s")
