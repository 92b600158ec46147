"""The fraud-scoring example stage (examples/fraud), tested on the pipeline driver.

A scoring service runs in the test; the driver runs the example pipeline file's
whole chain in-process. Also: what the pipeline does when a stage's service is slow
(timeout, retries, breaker, on_failure) and when a stage raises or cannot load.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.errors import ConfigError
from stream.runtime.steps import DependencyUnavailable
from stream.testing import PipelineDriver

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "examples" / "fraud" / "pipeline.yaml"
T0 = 1_796_205_600_000  # 2026-12-02T10:00:00Z
CUSTOMERS = {"c1": {"segment": "gold", "country": "DE"}}


class Scoring:
    """The scoring service: score = amount / 1000 (capped), optionally slow."""

    def __init__(self) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.delay = 0.0

    def __call__(self, orders: list[dict[str, Any]]) -> dict[str, Any]:
        self.requests.append(orders)
        time.sleep(self.delay)
        return {"scores": [min(o["amount"] / 1000, 0.99) for o in orders]}


@pytest.fixture
def scoring(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scoring]:
    service = Scoring()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = json.dumps(service(json.loads(body))).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("FRAUD_SCORING_URL", f"http://127.0.0.1:{server.server_address[1]}/score")
    yield service
    server.shutdown()


def order(i: int, amount: float) -> dict[str, Any]:
    return {
        "order_id": f"o{i}",
        "customer_id": "c1",
        "created_at": f"2026-12-02T10:{i % 60:02d}:00Z",
        "amount": amount,
        "currency": "EUR",
        "items": [{"sku": "ABC-1", "qty": 1}],
    }


def driver(pipeline: Path = PIPELINE) -> PipelineDriver:
    return PipelineDriver(pipeline, tables={"customer": CUSTOMERS}, now_ms=T0 + 3_600_000)


def variant(tmp_path: Path, **stage: Any) -> Path:
    """The example pipeline with the stage's settings changed."""
    spec = yaml.safe_load(PIPELINE.read_text())
    spec["stages"][0].update(stage)
    spec["schema_file"] = str(REPO / "stream" / "pipelines" / "orders.schema.json")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_scores_are_added_suspects_emitted_and_blocked_orders_dead_lettered(
    scoring: Scoring,
) -> None:
    d = driver()
    amounts = [100.0, 850.0, 990.0, 300.0]
    for i, amount in enumerate(amounts):
        d.send(order(i, amount), key="c1")
    out = d.run()
    assert len(scoring.requests) == 1, "one request per batch"
    enriched = {r.json()["order_id"]: r.json() for r in out.enriched}
    assert sorted(enriched) == ["o0", "o1", "o3"]
    assert enriched["o0"]["fraud_score"] == pytest.approx(0.1)
    assert enriched["o1"]["fraud_score"] == pytest.approx(0.85)
    assert enriched["o0"]["enrichment"]["customer"] == CUSTOMERS["c1"]
    (suspect,) = out.extra["orders.fraud"]
    assert suspect.json() == {"id": "o1", "customer_id": "c1", "amount": 850.0, "score": 0.85}
    assert suspect.key == b"c1" and suspect.header("stream.input") == b"orders/0/1"
    (blocked,) = out.dlq
    assert blocked.json()["order_id"] == "o2"
    assert blocked.header("dlq.error.class") == b"suspected_fraud"
    assert blocked.header("dlq.stage") == b"score"


def test_a_slow_service_times_out_then_dead_letters_with_on_failure_dlq(
    scoring: Scoring, tmp_path: Path
) -> None:
    scoring.delay = 0.5
    d = driver(variant(tmp_path, timeout="100ms", retries=1, on_failure="dlq"))
    d.send(order(0, 100.0))
    d.send(order(1, 200.0))
    out = d.run()
    assert out.enriched == []
    assert [r.header("dlq.error.class") for r in out.dlq] == [b"stage_unavailable"] * 2
    assert [r.header("dlq.attempts") for r in out.dlq] == [b"2"] * 2
    assert len(scoring.requests) == 2, "the call and one retry"
    step = d.stages.user_steps[0]
    d.send(order(2, 100.0))
    d.run()  # third failure in a row: the breaker opens
    assert step.breaker.state.name == "OPEN"
    calls = len(scoring.requests)
    d.send(order(3, 100.0))
    assert [r.header("dlq.error.class") for r in d.run().dlq] == [b"stage_unavailable"]
    assert len(scoring.requests) == calls, "an open breaker does not call the service"


def test_a_slow_service_with_on_failure_pause_sends_nothing_anywhere(
    scoring: Scoring, tmp_path: Path
) -> None:
    scoring.delay = 0.5
    d = driver(variant(tmp_path, timeout="100ms", retries=0, on_failure="pause"))
    d.send(order(0, 100.0))
    with pytest.raises(DependencyUnavailable, match="score"):
        d.run()  # the worker seeks back and pauses; nothing was written


def test_a_stage_that_raises_on_one_record_dead_letters_only_that_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flaky_stage.py").write_text(
        "def check(batch):\n"
        "    for i, e in enumerate(batch.events):\n"
        "        if e.amount == 13:\n"
        "            raise RuntimeError('unlucky amount')\n"
        "        batch.update(i, checked=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    d = driver(variant(tmp_path, python="flaky_stage:check", topics=[], name="flaky"))
    for i, amount in enumerate([10.0, 13.0, 20.0]):
        d.send(order(i, amount))
    out = d.run()
    assert [(r.json()["order_id"], r.json()["checked"]) for r in out.enriched] == [
        ("o0", True),
        ("o2", True),
    ]
    (bad,) = out.dlq
    assert bad.header("dlq.error.class") == b"unprocessable"
    assert bad.header("dlq.stage") == b"flaky" and bad.header("dlq.attempts") == b"2"
    assert b"unlucky amount" in (bad.header("dlq.error.message") or b"")


@pytest.mark.parametrize(
    ("python", "reason"),
    [
        ("no_such_module_xyz:score", "cannot import 'no_such_module_xyz'"),
        ("examples.fraud.stage:nope", "has no function 'nope'"),
        ("os:getcwd", "must take one argument (the StageBatch), takes 0"),
    ],
)
def test_stages_that_cannot_load_fail_at_start_naming_the_stage(
    tmp_path: Path, python: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        driver(variant(tmp_path, python=python))
    message = str(caught.value)
    assert "stages[0].python" in message and reason in message, message
    assert "pipeline.yaml" in message
