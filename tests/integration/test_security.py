"""A worker against a SASL/SCRAM broker with ACLs (a dedicated local broker).

* Wrong password: the worker fails at start-up with one ``stream: error:`` line
  naming the authentication failure, exit code != 0, and touches nothing — no
  offsets committed, no record written.
* Right password, no ACLs: it fails fast, naming the topics it may not use.
* Right password, ACLs on the input but not on the outputs: it exits non-zero at
  its first checkpoint without committing anything.
* Everything granted: it works, and the password appears neither in its log
  nor on ``/metrics``.

Credentials come from ``STREAM_SASL_USERNAME``/``STREAM_SASL_PASSWORD``, the
protocol from ``STREAM_KAFKA`` (a JSON object of librdkafka properties).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from stream import localbroker
from tests.chaos.harness import (
    Pipeline,
    Worker,
    committed_offsets,
    create_pipeline,
    end_offsets,
    numbered,
    produce,
    wait_all_committed,
    workers,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

#: This test's share of the local port space (the broker takes port and port + 1).
PORTS = (45000, 45999)
SECURITY = localbroker.ScramSecurity()
PASSWORD = SECURITY.users["worker"]


@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("sasl-broker")
    port = localbroker.free_port_pair(*PORTS)
    try:
        bootstrap = localbroker.start(
            port, home, security="sasl_scram", libs=localbroker.ensure_server_jars()
        )
    except localbroker.LocalBrokerError as exc:
        pytest.fail(f"could not start the SASL broker: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        localbroker.stop(port, home)


@pytest.fixture
def pipeline(sasl_bootstrap: str) -> Pipeline:
    return create_pipeline(
        sasl_bootstrap, 2, prefix="sec", client_config=SECURITY.client_config("admin")
    )


def _worker_env(password: str) -> dict[str, str]:
    return {
        "STREAM_SASL_USERNAME": "worker",
        "STREAM_SASL_PASSWORD": password,
        "STREAM_KAFKA": json.dumps(
            {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256"}
        ),
    }


def _grant(pipeline: Pipeline, *, write: bool = True, group: bool = True) -> None:
    admin = AdminClient(pipeline.conf())
    principal = "User:worker"

    def acl(kind: Any, name: str, op: Any) -> AclBinding:
        return AclBinding(
            kind, name, ResourcePatternType.LITERAL, principal, "*", op, AclPermissionType.ALLOW
        )

    bindings = [
        acl(ResourceType.TOPIC, topic, op)
        for topic in (pipeline.input, pipeline.reference, pipeline.changelog)
        for op in (AclOperation.DESCRIBE, AclOperation.READ)
    ]
    outputs = (pipeline.enriched, pipeline.correlations, pipeline.dlq)
    bindings += [acl(ResourceType.TOPIC, topic, AclOperation.DESCRIBE) for topic in outputs]
    if write:
        bindings += [
            acl(ResourceType.TOPIC, topic, AclOperation.WRITE)
            for topic in (*outputs, pipeline.changelog)
        ]
    if group:
        bindings.append(acl(ResourceType.GROUP, pipeline.group, AclOperation.READ))
    for future in admin.create_acls(bindings).values():
        future.result(30)


def _nothing_touched(pipeline: Pipeline) -> None:
    assert committed_offsets(pipeline) == {}
    for topic in pipeline.outputs:
        assert set(end_offsets(pipeline, topic, committed_only=False).values()) == {0}, topic


def _error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("stream: error:")]


def test_wrong_password_fails_fast_with_one_clear_message(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    produce(pipeline, numbered(10))
    worker = Worker(pipeline, tmp_path, "w", env=_worker_env("not-the-password"))
    with workers(worker):
        worker.start()
        code = worker.wait_exit(30)
    log = worker.log_text()
    assert code != 0
    [line] = _error_lines(log)
    assert "authentication" in line.lower()
    assert "Traceback" not in log
    assert "not-the-password" not in log
    _nothing_touched(pipeline)


def test_no_acls_fails_fast_naming_the_topics(pipeline: Pipeline, tmp_path: Path) -> None:
    worker = Worker(pipeline, tmp_path, "w", env=_worker_env(PASSWORD))
    with workers(worker):
        worker.start()
        code = worker.wait_exit(30)
    log = worker.log_text()
    assert code != 0
    [line] = _error_lines(log)
    assert "not authorized" in line and pipeline.input in line
    assert "Traceback" not in log
    _nothing_touched(pipeline)


@pytest.mark.parametrize("missing", ["write", "group"])
def test_missing_acl_stops_the_worker_without_committing(
    missing: str, pipeline: Pipeline, tmp_path: Path
) -> None:
    """No WRITE on the outputs: refused at the first checkpoint. No READ on the group:
    refused when joining. Either way: exit non-zero, nothing committed or visible."""
    _grant(pipeline, write=missing != "write", group=missing != "group")
    produce(pipeline, numbered(100))
    worker = Worker(pipeline, tmp_path, "w", env=_worker_env(PASSWORD))
    with workers(worker):
        worker.start()
        code = worker.wait_exit(60)
    assert code != 0
    # Without WRITE on any topic the idempotent producer cannot even get its producer id.
    what = "authorization failed" if missing == "write" else "group authorization failed"
    assert what in worker.log_text().lower(), worker.log_tail()
    assert committed_offsets(pipeline) == {}


def test_authorized_worker_runs_and_never_shows_its_password(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    _grant(pipeline)
    worker = Worker(
        pipeline, tmp_path, "w", env={**_worker_env(PASSWORD), "STREAM_LOG_LEVEL": "DEBUG"}
    )
    with workers(worker):
        worker.start()
        worker.wait_ready()
        produce(pipeline, numbered(500, prefix=uuid.uuid4().hex[:6]))
        wait_all_committed(pipeline, timeout=60, workers=[worker])
        metrics = worker.metrics_text()
        assert worker.terminate()[0] == 0
    assert sum(end_offsets(pipeline, pipeline.enriched).values()) == 500
    assert PASSWORD not in worker.log_text()
    assert PASSWORD not in metrics
