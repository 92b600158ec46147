"""Session fixtures: one real Kafka broker for every test marked ``broker``.

``kafka_bootstrap`` comes from the first of these that applies:

1. ``STREAM_BOOTSTRAP_SERVERS`` — an existing cluster (CI service, your dev broker);
2. a Docker engine answers within 2 s — an ``apache/kafka`` container via testcontainers;
3. otherwise the project's own local broker (``stream.localbroker``: Kafka from Maven
   Central on the local JVM) on a free port, with data in a temporary directory but
   jars in ``$STREAM_HOME``'s cache, so they are downloaded once per machine.

Helpers: ``unique_name(prefix)`` for fresh topic and group names, ``kafka_admin``
(an AdminClient) and ``topic_factory`` (creates a fresh topic and waits until it is
usable; deletes it afterwards).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

BOOTSTRAP_ENV = "STREAM_BOOTSTRAP_SERVERS"
CONTAINER_IMAGE = "apache/kafka:4.3.1"
_BROKER_START_TIMEOUT_S = 120.0


def unique_name(prefix: str) -> str:
    """``prefix`` plus a random suffix: a topic or group name no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _broker_for_marked_tests(request: pytest.FixtureRequest) -> None:
    """Tests marked ``broker`` get the session broker even if they do not ask for it."""
    if "kafka_cluster" in request.fixturenames:
        return  # the test has its own cluster; no single broker needed
    if request.node.get_closest_marker("broker") is not None:
        request.getfixturevalue("kafka_bootstrap")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for the whole test session."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
    elif _docker_answers():
        yield from _container_broker()
    else:
        yield from _local_broker(tmp_path_factory.mktemp("kafka-home"))


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local three-node Kafka cluster (RF 3, min ISR 2) for one test module, and a handle
    to stop, kill, isolate or delay its nodes: see :mod:`tests.support.cluster`."""
    from tests.support.cluster import running_cluster

    yield from running_cluster(tmp_path_factory.mktemp("kafka-cluster-home"))


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic_factory(kafka_admin: Any) -> Iterator[Callable[..., str]]:
    """``topic_factory(prefix="test", partitions=1, config=None) -> name`` creates a fresh
    topic (e.g. ``config={"cleanup.policy": "compact"}``) and returns once it has leaders."""
    from confluent_kafka.admin import NewTopic

    created: list[str] = []

    def create(
        prefix: str = "test", partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> str:
        name = unique_name(prefix)
        topic = NewTopic(name, num_partitions=partitions, config=dict(config or {}))
        kafka_admin.create_topics([topic], operation_timeout=30)[name].result(timeout=60)
        created.append(name)
        _wait_for_topic(kafka_admin, name, partitions)
        return name

    yield create
    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


def _wait_for_topic(admin: Any, name: str, partitions: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        topic = admin.list_topics(topic=name, timeout=10).topics.get(name)
        ready = (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} has no leader for all partitions after {timeout}s")
        time.sleep(0.1)


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _container_broker() -> Iterator[str]:
    # testcontainers' KafkaContainer drives Confluent images only; the official
    # apache/kafka image is configured through KAFKA_* variables, the same settings
    # the local broker uses.
    from testcontainers.core.container import DockerContainer

    from stream.localbroker import free_port_pair, wait_until_ready
    from stream.localbroker.config import BrokerSettings, container_environment

    port = free_port_pair()
    container = DockerContainer(CONTAINER_IMAGE).with_bind_ports(port, port)
    host = container.get_docker_client().host()
    settings = BrokerSettings(port=port, log_dirs=Path("/tmp/kraft-combined-logs"))
    for key, value in container_environment(settings, host).items():
        container.with_env(key, value)
    container.start()
    try:
        bootstrap = f"{host}:{port}"
        wait_until_ready(bootstrap, _BROKER_START_TIMEOUT_S)
        yield bootstrap
    finally:
        container.stop()


def _local_broker(home: Path) -> Iterator[str]:
    from stream import localbroker

    try:
        libs = localbroker.ensure_server_jars()  # the default $STREAM_HOME cache
        port = localbroker.free_port_pair()
        bootstrap = localbroker.start(port, home, timeout=_BROKER_START_TIMEOUT_S, libs=libs)
    except localbroker.LocalBrokerError as exc:
        pytest.fail(f"could not start a local Kafka broker: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        localbroker.stop(port, home)
