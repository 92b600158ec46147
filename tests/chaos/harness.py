"""Real workers on a real broker, and an exact ledger of where every input record went.

Every guarantee test asks the same question after something went wrong (a
``kill -9``, a broker restart, a fenced zombie, garbage input): for each input
record, identified by its partition and offset, how many copies reached
``events.enriched`` and the DLQ? This module provides the pieces to ask it:

* :class:`Pipeline` — a fresh set of topics and a consumer group, and the
  ``STREAM_*`` environment that points a worker at them;
* :class:`Worker` — ``python -m stream.cli worker`` as a subprocess, with
  helpers to wait for readiness, read ``/metrics``, SIGTERM, SIGSTOP and
  ``kill -9`` it;
* :func:`produce` / :class:`BackgroundProducer` — write records and learn each
  one's input offset from its delivery report;
* :func:`read_topic` — everything a topic holds, up to its last stable offset
  (``read_committed``) or its high watermark;
* :func:`account` — the ledger: lost, duplicated and misplaced records;
* :class:`RateSampler` and :func:`replay_bound` — how many records a worker consumes
  in two commit intervals plus one batch, the bound on what a crash may replay;
* :func:`reference_correlations` / :func:`correlation_keys` — the correlations an
  uninterrupted run produces from the same input (the in-process
  :class:`~stream.testing.PipelineDriver`), to compare a chaos run's with.

Every helper takes its broker from the :class:`Pipeline`, so the same code serves the
session broker, a broker of the test's own and the three-node ``kafka_cluster``
(:func:`create_pipeline` with ``cluster.bootstrap``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from stream.kafka import reader

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Number of events the chaos tests send; scaled down from the issue's 200k so the whole
#: chaos suite fits in about six minutes on a 2-core machine. Raise it for a soak run.
CHAOS_EVENTS_ENV = "STREAM_CHAOS_EVENTS"


def chaos_events(default: int) -> int:
    return int(os.environ.get(CHAOS_EVENTS_ENV, default))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- topics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """Fresh topic names and group for one worker deployment."""

    bootstrap: str
    input: str
    enriched: str
    correlations: str
    dlq: str
    reference: str
    changelog: str
    group: str
    partitions: int
    client_config: Mapping[str, str] = field(default_factory=dict)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.enriched, self.correlations, self.dlq, self.changelog)

    def env(self) -> dict[str, str]:
        """The ``STREAM_*`` variables that point a worker at these topics."""
        return {
            "STREAM_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAM_GROUP_ID": self.group,
            "STREAM_APP_ID": f"{self.group}-app",
            "STREAM_TOPICS__INPUT": self.input,
            "STREAM_TOPICS__ENRICHED": self.enriched,
            "STREAM_TOPICS__CORRELATIONS": self.correlations,
            "STREAM_TOPICS__DLQ": self.dlq,
            "STREAM_TOPICS__REFERENCE": self.reference,
            "STREAM_TOPICS__CHANGELOG": self.changelog,
        }

    def conf(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.client_config, **extra}


def create_pipeline(
    bootstrap: str,
    partitions: int = 4,
    *,
    prefix: str = "chaos",
    topic_config: Mapping[str, Mapping[str, str]] | None = None,
    client_config: Mapping[str, str] | None = None,
) -> Pipeline:
    """Create the six topics of a pipeline (reference and changelog compacted)."""
    tag = uuid.uuid4().hex[:10]
    names = {
        role: f"{prefix}-{role}-{tag}"
        for role in ("input", "enriched", "correlations", "dlq", "reference", "changelog")
    }
    pipeline = Pipeline(
        bootstrap,
        group=f"{prefix}-group-{tag}",
        partitions=partitions,
        client_config=dict(client_config or {}),
        **names,
    )
    compact = {"cleanup.policy": "compact"}
    overrides = topic_config or {}
    new = [
        NewTopic(
            name,
            num_partitions=1 if role == "reference" else partitions,
            config={
                **(compact if role in ("reference", "changelog") else {}),
                **overrides.get(role, {}),
            },
        )
        for role, name in names.items()
    ]
    admin = AdminClient(pipeline.conf())
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result(timeout=60)

    def leaders_ready() -> bool:
        metadata = admin.list_topics(timeout=10)
        for name in names.values():
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                return False
            if any(p.leader < 0 for p in topic.partitions.values()):
                return False
        return True

    wait_for(leaders_ready, 30, "leaders of the pipeline topics")
    return pipeline


@pytest.fixture
def pipeline_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Pipeline]]:
    """``pipeline_factory(partitions=4, bootstrap=None, **kw)``: fresh topics, deleted after.

    Import it into a test module (or conftest) to use it; topics on other brokers
    (``bootstrap=``) die with their broker.
    """
    made: list[Pipeline] = []

    def make(partitions: int = 4, bootstrap: str | None = None, **kwargs: Any) -> Pipeline:
        pipeline = create_pipeline(bootstrap or kafka_bootstrap, partitions, **kwargs)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        if pipeline.bootstrap == kafka_bootstrap:
            delete_pipeline(pipeline)


def delete_pipeline(pipeline: Pipeline) -> None:
    admin = AdminClient(pipeline.conf())
    names = [pipeline.input, *pipeline.outputs, pipeline.reference]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


# -- workers -----------------------------------------------------------------------------------


class Worker:
    """One ``stream worker`` process; restartable (each start gets a fresh log file)."""

    def __init__(
        self,
        pipeline: Pipeline,
        workdir: Path,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.workdir = workdir
        self.name = name
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.command = list(command) if command else [sys.executable, "-m", "stream.cli", "worker"]
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []

    # lifecycle

    def start(self) -> Worker:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.port = free_port()
        self.starts += 1
        log_path = self.workdir / f"{self.name}-{self.starts}.log"
        self.logs.append(log_path)
        env = dict(os.environ)
        env.update(self.pipeline.env())
        env.update(
            {
                "PYTHONPATH": str(REPO_ROOT),
                "STREAM_HOME": str(self.workdir / "home"),
                "STREAM_LOG_FORMAT": "text",
            }
        )
        env.update(self.extra_env)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*self.command, "--web-port", str(self.port), *self.args],
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 60.0, *, assigned: bool = True) -> list[int]:
        """Wait until ``/ready`` answers (and, by default, the worker owns partitions)."""

        def ready() -> list[int] | bool:
            if not self.running:
                raise AssertionError(
                    f"worker {self.name} exited with {self.returncode()} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            body = self.ready_body()
            if body is None or not body.get("ready"):
                return False
            partitions = list(body.get("assigned_partitions", []))
            return partitions if partitions or not assigned else False

        result = wait_for(ready, timeout, f"worker {self.name} to be ready")
        return result if isinstance(result, list) else []

    def ready_body(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read() or b"{}"))
        except (OSError, ValueError):
            return None

    def assigned(self, timeout: float = 30.0) -> list[int]:
        """Partitions the worker owns, as it reports them (waits while it cannot answer)."""
        body = wait_for(self.ready_body, timeout, f"worker {self.name} to answer /ready")
        return list(body.get("assigned_partitions", []))

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    total += sample.value
        return total

    def terminate(self, timeout: float = 40.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs at all."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_tail(self, lines: int = 40) -> str:
        text = self.logs[-1].read_text(errors="replace") if self.logs else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Test teardown: make sure nothing is left running (thaw first, SIGSTOPped or not)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.thaw()
            self.kill()


@contextlib.contextmanager
def workers(*ws: Worker) -> Iterator[tuple[Worker, ...]]:
    try:
        yield ws
    finally:
        for w in ws:
            w.close()


# -- producing ---------------------------------------------------------------------------------

Position = tuple[int, int]


def _producer(pipeline: Pipeline, **conf: Any) -> Producer:
    return Producer(pipeline.conf(**{"linger.ms": 5, "enable.idempotence": True, **conf}))


def produce(
    pipeline: Pipeline,
    records: Iterable[tuple[bytes | None, bytes | None]],
    topic: str | None = None,
    **conf: Any,
) -> list[Position]:
    """Write ``(key, value)`` records; return each one's (partition, offset) in input order.

    ``conf``: extra producer settings (e.g. ``{"message.max.bytes": ...}`` via ``**``).
    """
    producer = _producer(pipeline, **conf)
    positions: list[Position] = []
    failures: list[str] = []

    def report(index: int) -> Callable[[KafkaError | None, Any], None]:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(err.str())
            else:
                positions[index] = (msg.partition(), msg.offset())

        return on_delivery

    for key, value in records:
        positions.append((-1, -1))
        while True:
            try:
                producer.produce(
                    topic or pipeline.input, value, key, on_delivery=report(len(positions) - 1)
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still unacknowledged after 60s"
    assert not failures, f"{len(failures)} produce failures, first: {failures[0]}"
    return positions


class BackgroundProducer(threading.Thread):
    """Sends records at ``rate`` per second from a thread (so chaos happens mid-stream)."""

    def __init__(
        self,
        pipeline: Pipeline,
        records: Sequence[tuple[bytes | None, bytes | None]],
        rate: float,
    ) -> None:
        super().__init__(daemon=True)
        self.pipeline = pipeline
        self.records = records
        self.rate = rate
        self.positions: list[Position] = [(-1, -1)] * len(records)
        self.failures: list[str] = []
        self.sent = 0

    def run(self) -> None:
        producer = _producer(self.pipeline)
        started = time.monotonic()
        chunk = max(int(self.rate / 20), 1)
        for first in range(0, len(self.records), chunk):
            for i in range(first, min(first + chunk, len(self.records))):
                key, value = self.records[i]
                while True:
                    try:
                        producer.produce(
                            self.pipeline.input, value, key, on_delivery=self._report(i)
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
            self.sent = min(first + chunk, len(self.records))
            producer.poll(0)
            ahead = self.sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        if producer.flush(120):
            self.failures.append("records unacknowledged after 120s")

    def _report(self, index: int) -> Callable[[KafkaError | None, Any], None]:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self.failures.append(err.str())
            else:
                self.positions[index] = (msg.partition(), msg.offset())

        return on_delivery

    def finish(self, timeout: float = 180.0) -> list[Position]:
        self.join(timeout)
        assert not self.is_alive(), "background producer did not finish"
        assert not self.failures, f"produce failures: {self.failures[:3]}"
        return self.positions


# -- reading -----------------------------------------------------------------------------------


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def end_offsets(pipeline: Pipeline, topic: str, *, committed_only: bool = True) -> dict[int, int]:
    """Per partition: the last stable offset (``committed_only``) or the high watermark."""
    return reader.end_offsets(pipeline.conf(), topic, committed_only=committed_only)


def read_topic(
    pipeline: Pipeline,
    topic: str,
    *,
    committed_only: bool = True,
    timeout: float = 90.0,
) -> list[Record]:
    """Every record of ``topic`` up to the end as of the call (see ``reader.read_to_end``:
    with ``committed_only``, open transactions are waited for within ``timeout``)."""
    messages = reader.read_to_end(
        pipeline.conf(), topic, read_committed=committed_only, timeout=timeout
    )
    return [
        Record(m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or []))
        for m in messages
    ]


def committed_offsets(pipeline: Pipeline, topic: str | None = None) -> dict[int, int]:
    """The group's committed next-offset per input partition (absent = nothing committed)."""
    return reader.committed_offsets(
        pipeline.conf(), pipeline.group, topic or pipeline.input, range(pipeline.partitions)
    )


def wait_all_committed(pipeline: Pipeline, timeout: float, workers: Sequence[Worker] = ()) -> None:
    """Wait until the group has committed every input record (the end of the input topic)."""
    ends = end_offsets(pipeline, pipeline.input, committed_only=False)

    def done() -> bool:
        for w in workers:
            if not w.running:
                raise AssertionError(
                    f"worker {w.name} exited with {w.returncode()}:\n{w.log_tail()}"
                )
        got = committed_offsets(pipeline)
        return all(got.get(p, 0) >= end for p, end in ends.items() if end > 0)

    wait_for(done, timeout, f"the group to commit up to {ends}", interval=0.5)


# -- the ledger --------------------------------------------------------------------------------

_ID = msgspec.json.Decoder(type=dict[str, Any])


def enriched_event_id(value: bytes | None) -> str:
    return str(_ID.decode(value or b"{}").get("event_id"))


@dataclass
class Ledger:
    """Where each input record ended up; built by :func:`account`."""

    events_in: int
    valid_in: int
    enriched_out: int
    dlq_out: int
    late_out: int
    #: input positions with no copy where they belong
    lost: list[Position]
    #: input position -> copies beyond the first (enriched or validate-DLQ)
    duplicates: dict[Position, int]
    #: input positions found in the wrong place (valid in the DLQ, invalid in enriched)
    misplaced: list[Position]
    #: DLQ reasons (dlq.error.class) of validate-stage DLQ records
    dlq_reasons: Counter[str]
    degraded: int = 0

    @property
    def duplicate_count(self) -> int:
        return sum(self.duplicates.values())

    def row(self, name: str, **extra: Any) -> dict[str, Any]:
        return {
            "test": name,
            "events in": self.events_in,
            "enriched": self.enriched_out,
            "DLQ": self.dlq_out,
            "duplicates": self.duplicate_count,
            "lost": len(self.lost),
            **extra,
        }


def account(
    inputs: Mapping[Position, tuple[str, bool]],
    enriched: Iterable[Record],
    dlq: Iterable[Record],
) -> Ledger:
    """Match outputs to inputs.

    ``inputs`` maps input (partition, offset) to (event id, valid). Enriched records
    are matched by event id; DLQ records by ``dlq.original.partition/offset``. DLQ
    records of the correlate stage (late events) are counted apart: an event can be
    both enriched and late.
    """
    by_id = {event_id: pos for pos, (event_id, _) in inputs.items()}
    copies: Counter[Position] = Counter()
    misplaced: list[Position] = []
    enriched_out = dlq_out = late_out = degraded = 0
    reasons: Counter[str] = Counter()
    for r in enriched:
        enriched_out += 1
        body = _ID.decode(r.value or b"{}")
        if body.get("enrichment", {}).get("degraded"):
            degraded += 1
        pos = by_id.get(str(body.get("event_id")))
        if pos is None:
            continue
        if inputs[pos][1]:
            copies[pos] += 1
        else:
            misplaced.append(pos)
    for r in dlq:
        if r.headers.get("dlq.stage") == b"correlate":
            late_out += 1
            continue
        dlq_out += 1
        pos = (int(r.headers["dlq.original.partition"]), int(r.headers["dlq.original.offset"]))
        if pos not in inputs:
            continue
        reasons[r.headers.get("dlq.error.class", b"").decode()] += 1
        if inputs[pos][1]:
            misplaced.append(pos)
        else:
            copies[pos] += 1
    lost = [pos for pos in inputs if copies[pos] == 0 and pos not in misplaced]
    return Ledger(
        events_in=len(inputs),
        valid_in=sum(1 for _, valid in inputs.values() if valid),
        enriched_out=enriched_out,
        dlq_out=dlq_out,
        late_out=late_out,
        lost=sorted(lost),
        duplicates={pos: n - 1 for pos, n in copies.items() if n > 1},
        misplaced=sorted(misplaced),
        dlq_reasons=reasons,
        degraded=degraded,
    )


def inputs_of(
    positions: Sequence[Position], ids: Sequence[str], valid: Sequence[bool]
) -> dict[Position, tuple[str, bool]]:
    assert all(p >= 0 for p, _ in positions), "some input records were never acknowledged"
    return {pos: (ids[i], valid[i]) for i, pos in enumerate(positions)}


# -- replays ------------------------------------------------------------------------------------


class RateSampler(threading.Thread):
    """Samples each worker's ``stream_events_consumed_total`` every ``interval`` seconds.

    :meth:`most_in` answers "the most records one worker consumed in any ``seconds``" —
    with ``seconds`` = two commit intervals, what a crash may replay at the measured rate.
    A restarted worker's counter starts again at 0; samples are kept per process start.
    """

    def __init__(self, ws: Sequence[Worker], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.workers = list(ws)
        self.interval = interval
        #: (worker name, start number) -> [(monotonic time, consumed)]
        self.samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        #: (worker name, start number) -> largest batch seen (histogram bucket bound)
        self.batches: dict[tuple[str, int], float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            for w in self.workers:
                self.sample(w)

    def sample(self, w: Worker) -> None:
        if not w.running:
            return
        try:
            text = w.metrics_text()
        except OSError:
            return
        consumed = 0.0
        largest = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "stream_events_consumed_total":
                    consumed += s.value
            if family.name == "stream_batch_size":
                largest = _largest_observed(family.samples)
        key = (w.name, w.starts)
        self.samples.setdefault(key, []).append((time.monotonic(), consumed))
        self.batches[key] = max(self.batches.get(key, 0.0), largest)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def most_in(self, seconds: float, key: tuple[str, int] | None = None) -> float:
        """Most records consumed within ``seconds`` by one process (or by ``key`` only,
        in the ``seconds`` before its last sample)."""
        best = 0.0
        for k, points in self.samples.items():
            if key is not None and k != key:
                continue
            if key is not None:
                points = [(t, c) for t, c in points if t >= points[-1][0] - seconds - self.interval]
                best = max(best, points[-1][1] - (points[0][1] if len(points) > 1 else 0.0))
                continue
            for i, (t0, c0) in enumerate(points):
                for t1, c1 in points[i:]:
                    if t1 - t0 > seconds + self.interval:
                        break
                    best = max(best, c1 - c0)
        return best

    def largest_batch(self, key: tuple[str, int] | None = None) -> float:
        values = [v for k, v in self.batches.items() if key is None or k == key]
        return max(values, default=0.0)


def _largest_observed(samples: Sequence[Any]) -> float:
    """The smallest histogram bucket bound that holds every observation (``+Inf`` -> 1e9)."""
    buckets = sorted(
        (float(s.value), float(s.labels["le"])) for s in samples if s.name.endswith("_bucket")
    )
    total = max((v for v, _ in buckets), default=0.0)
    if total == 0:
        return 0.0
    bounds = sorted(le for v, le in buckets if v >= total)
    return bounds[0] if bounds[0] != float("inf") else 1e9


def replay_bound(sampler: RateSampler, commit_interval: float = 1.0) -> float:
    """Two commit intervals plus one batch at the measured rate (README, "Bounded replay")."""
    return sampler.most_in(2 * commit_interval) + sampler.largest_batch()


def duplicates_by_partition(ledger: Ledger) -> dict[int, int]:
    """Per input partition, the records that reached their output more than once."""
    per: Counter[int] = Counter()
    for (partition, _), extra in ledger.duplicates.items():
        per[partition] += extra
    return dict(per)


# -- correlations --------------------------------------------------------------------------------


def correlation_keys(records: Iterable[Record]) -> list[tuple[Any, ...]]:
    """Each correlation record as a comparable tuple, sorted (one entry per copy)."""
    out = []
    for r in records:
        body = _ID.decode(r.value or b"{}")
        # the input partition, from the lineage header (topic/partition/first-last)
        lineage = r.headers.get("stream.input", b"").decode()
        out.append(
            (
                int(lineage.rsplit("/", 2)[-2]) if lineage else r.partition,
                body.get("rule"),
                tuple(sorted((body.get("group") or {}).items())),
                body.get("window_start"),
                body.get("window_end"),
                body.get("count"),
                body.get("value"),
                tuple(body.get("sample_event_ids") or ()),
                body.get("first_offset"),
                body.get("last_offset"),
            )
        )
    return sorted(out)


def by_window(keys: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], set[tuple[Any, ...]]]:
    """Correlations grouped by (partition, rule, group, window): at_least_once may repeat one."""
    grouped: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}
    for k in keys:
        grouped.setdefault(k[:5], set()).add(k)
    return grouped


def reference_correlations(
    records: Sequence[tuple[bytes | None, bytes | None]], positions: Sequence[Position]
) -> list[tuple[Any, ...]]:
    """What an uninterrupted run outputs to the correlations topic for these input records
    at these (partition, offset) positions: the worker's chain in-process, each partition
    in offset order, windows closed by event time only (no idle timeout)."""
    from stream.testing import PipelineDriver

    driver = PipelineDriver(tables={"service": {}})  # the reference topic stays empty
    order = sorted(range(len(records)), key=lambda i: positions[i])
    produced: list[Record] = []
    for first in range(0, len(order), 2000):
        for i in order[first : first + 2000]:
            key, value = records[i]
            driver.send(value, key=key, partition=positions[i][0])
        for out in driver.run().correlations:
            produced.append(Record(-1, -1, out.key, out.value, dict(out.headers)))
    return correlation_keys(produced)


# -- events ------------------------------------------------------------------------------------


def event(index: int, *, source: str = "svc-1", pad: int = 0, prefix: str = "ev") -> bytes:
    """One valid input event (``pad``: an attribute of that many characters)."""
    body: dict[str, Any] = {
        "event_id": f"{prefix}-{index}",
        "type": "http.request",
        "source": source,
        "timestamp": int(time.time() * 1000),
        "severity": "info",
    }
    if pad:
        body["attributes"] = {"pad": os.urandom(pad // 2 + 1).hex()[:pad]}
    return json.dumps(body).encode()


def numbered(count: int, start: int = 0, **kwargs: Any) -> list[tuple[bytes, bytes]]:
    """``count`` valid events with ids ``ev-<start>..``, keyed by index (spread over partitions)."""
    return [(b"k%d" % i, event(i, **kwargs)) for i in range(start, start + count)]
