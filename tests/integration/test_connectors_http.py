"""``stream ingest --http``: concurrent clients, exact counts, auth, limits, backpressure, SIGTERM.

The server runs as a subprocess against the real broker. The 429 path needs a
producer queue that stays full, which a healthy broker never gives for long,
so that one test drives the handler in-process with a producer stand-in
whose queue is full.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.support.observability as obs
from connectors.http_ingest import HttpIngestOptions, IngestHandler, Ticket, _split_body
from tests.support.pipeline import read_all

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000
TOKEN = "s3cret-token"


def event(event_id: str, severity: str = "info") -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "type": "t",
            "source": f"svc-{event_id[-1]}",
            "timestamp": T0,
            "severity": severity,
        }
    )


def post(
    url: str, body: bytes, *, token: str | None = TOKEN, content_type: str = "application/x-ndjson"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


class Server:
    def __init__(self, process: subprocess.Popen[str], port: int, topic: str) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.topic = topic


def free_port() -> int:
    import socket

    for port in range(44100, 44200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 44100-44199")


@pytest.fixture
def http_server(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> Iterator[Server]:
    topic = topic_factory("http", partitions=3)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAM_INGEST_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "ingest",
            "--http",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--topic",
            topic,
            "--max-body-bytes",
            "200000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    server = Server(process, port, topic)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.broker
def test_concurrent_clients_get_exact_counts_and_the_topic_holds_exactly_the_accepted(
    kafka_bootstrap: str, http_server: Server
) -> None:
    clients, requests, lines = 8, 15, 60
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            body = []
            for i in range(lines):
                if i % 12 == 5:
                    body.append(event(f"c{c}-r{r}-{i}", severity="loud"))
                elif i % 12 == 11:
                    body.append("{not json")
                else:
                    body.append(event(f"c{c}-r{r}-{i}"))
            status, answer, _ = post(f"{http_server.url}/events", "\n".join(body).encode())
            with lock:
                results.append((status, answer))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == clients * requests
    assert {status for status, _ in results} == {202}
    per_request_bad = 2 * (lines // 12)
    assert all(a["rejected"] == per_request_bad for _, a in results)
    accepted = sum(a["accepted"] for _, a in results)
    assert accepted == clients * requests * (lines - per_request_bad)
    first = results[0][1]["errors"]
    assert [(e["line"], e["error_class"]) for e in first[:2]] == [
        (6, "schema_violation"),
        (12, "malformed_json"),
    ]
    records = read_all(kafka_bootstrap, http_server.topic)
    assert len(records) == accepted
    assert len({json.loads(m.value())["event_id"] for m in records}) == accepted

    http_server.process.send_signal(signal.SIGTERM)
    _, err = http_server.process.communicate(timeout=60)
    assert http_server.process.returncode == 0, err
    assert f"{accepted:,} events accepted" in err


@pytest.mark.broker
def test_auth_size_limit_and_body_forms(http_server: Server) -> None:
    url = f"{http_server.url}/events"
    status, answer, headers = post(url, event("a1").encode(), token=None)
    assert (status, answer) == (401, {"error": "missing or wrong bearer token"})
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert post(url, event("a1").encode(), token="wrong")[0] == 401

    status, answer, _ = post(url, b"x" * 200_001)
    assert status == 413 and "larger than 200000 bytes" in answer["error"]
    assert post(url, b"\n\n")[0] == 400

    single = json.dumps(json.loads(event("s1")), indent=2).encode()  # one pretty event
    assert post(url, single, content_type="application/json")[:2] == (
        202,
        {"accepted": 1, "rejected": 0, "errors": []},
    )
    array = f"[{event('s2')}, 42]".encode()
    status, answer, _ = post(url, array, content_type="application/json")
    assert (status, answer["accepted"], answer["errors"][0]["index"]) == (202, 1, 2)
    assert post(url, b"[1,", content_type="application/json")[0] == 400


class FullProducer:
    """A producer whose queue is always full: every request must be told to come back."""

    pending = 10_000

    def send(self, *_args: object) -> Ticket:
        raise AssertionError("nothing may be produced when answering 429")


def test_full_producer_queue_answers_429_with_retry_after_and_produces_nothing() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    options = HttpIngestOptions(topic="events", max_pending=10_000)
    handler = IngestHandler(FullProducer(), obs.validator(), options)  # type: ignore[arg-type]

    async def scenario() -> tuple[int, str, dict[str, Any]]:
        async with TestClient(TestServer(handler.app())) as client:
            response = await client.post("/events", data=event("q1"))
            return response.status, response.headers["Retry-After"], await response.json()

    status, retry_after, body = asyncio.run(scenario())
    assert (status, retry_after) == (429, "1")
    assert "retry later" in body["error"]
    assert handler.stats.throttled == 1


def test_body_splitting() -> None:
    values, lines, key = _split_body(b'{"a":1}\n\n{"b":2}\r\n', "application/x-ndjson")
    assert (values, list(lines), key) == ([b'{"a":1}', b'{"b":2}'], [1, 3], "line")
    values, lines, key = _split_body(b' [{"a":1}, {"b":2}] ', "application/json")
    assert (values, list(lines), key) == ([b'{"a":1}', b'{"b":2}'], [1, 2], "index")
    values, lines, key = _split_body(b'{\n "a": 1\n}\n', "application/json")
    assert (values, key) == ([b'{\n "a": 1\n}'], "line")
    with pytest.raises(ValueError, match="not a JSON array"):
        _split_body(b"[1,", "application/json")
