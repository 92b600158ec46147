"""The project-managed local Kafka broker, started for real on the local JVM.

Each broker start costs ~5-10 s on a small machine, so one plain broker serves the
lifecycle, round-trip and compaction tests (in file order), and one more runs in
SASL/SCRAM mode. The missing-Java tests start nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from stream import localbroker
from stream.kafka import reader
from stream.localbroker import cli
from tests.conftest import unique_name

INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"


@dataclass(frozen=True)
class RunningBroker:
    port: int
    home: Path
    bootstrap: str


@pytest.fixture(scope="module")
def server_jars() -> Path:
    return localbroker.ensure_server_jars()  # the shared $STREAM_HOME cache


@pytest.fixture(scope="module")
def plain_broker(
    tmp_path_factory: pytest.TempPathFactory, server_jars: Path
) -> Iterator[RunningBroker]:
    home = tmp_path_factory.mktemp("plain-home")
    port = localbroker.free_port_pair()
    bootstrap = localbroker.start(port, home, libs=server_jars)
    yield RunningBroker(port, home, bootstrap)
    localbroker.stop(port, home)


def create_topic(admin: AdminClient, prefix: str, config: dict[str, str] | None = None) -> str:
    name = unique_name(prefix)
    admin.create_topics([NewTopic(name, num_partitions=1, config=config or {})])[name].result(30)
    return name


def read_all(bootstrap: str, topic: str, **config: str) -> list[tuple[bytes, bytes]]:
    """Every record of the topic from the beginning to its end."""
    conf = {"bootstrap.servers": bootstrap, **config}
    return [(m.key(), m.value()) for m in reader.read_to_end(conf, topic, timeout=30)]


@pytest.mark.broker
def test_start_twice_is_idempotent(plain_broker: RunningBroker, server_jars: Path) -> None:
    pid_before = localbroker.status(plain_broker.port, plain_broker.home).pid

    started = time.monotonic()
    again = localbroker.start(plain_broker.port, plain_broker.home, libs=server_jars)

    assert again == plain_broker.bootstrap == f"127.0.0.1:{plain_broker.port}"
    assert time.monotonic() - started < 3.0
    assert localbroker.status(plain_broker.port, plain_broker.home).pid == pid_before


@pytest.mark.broker
def test_status_of_running_broker(plain_broker: RunningBroker) -> None:
    state = localbroker.status(plain_broker.port, plain_broker.home)
    data_dir = plain_broker.home / f"broker-{plain_broker.port}"

    assert state.running is True
    assert state.pid is not None and state.pid > 0
    assert state.bootstrap == plain_broker.bootstrap
    assert state.data_dir == data_dir
    assert state.version == localbroker.KAFKA_VERSION
    assert state.security == "plaintext"
    assert (data_dir / "broker.pid").read_text().strip() == str(state.pid)
    assert "Kafka Server started" in (data_dir / "server.log").read_text()  # log4j2 writes it


@pytest.mark.broker
def test_produce_consume_round_trip(plain_broker: RunningBroker) -> None:
    admin = AdminClient({"bootstrap.servers": plain_broker.bootstrap})
    topic = create_topic(admin, "round-trip")
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    producer = Producer({"bootstrap.servers": plain_broker.bootstrap})
    for key, value in sent:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0

    assert read_all(plain_broker.bootstrap, topic) == sent


@pytest.mark.broker
def test_compaction_keeps_the_latest_value_per_key(plain_broker: RunningBroker) -> None:
    admin = AdminClient({"bootstrap.servers": plain_broker.bootstrap})
    topic = create_topic(
        admin,
        "compacted",
        {
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0",
        },
    )
    producer = Producer({"bootstrap.servers": plain_broker.bootstrap, "linger.ms": 0})
    for key, value in [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")]:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0
    time.sleep(0.3)  # older than segment.ms: the next append rolls the segment
    producer.produce(topic, b"1", key=b"c")
    assert producer.flush(30) == 0

    expected = [(b"b", b"1"), (b"a", b"2"), (b"c", b"1")]
    deadline = time.monotonic() + 60
    records = read_all(plain_broker.bootstrap, topic)
    while records != expected and time.monotonic() < deadline:
        time.sleep(1.0)
        records = read_all(plain_broker.bootstrap, topic)
    assert records == expected


@pytest.mark.broker
def test_port_held_by_another_process_is_reported(tmp_path: Path, server_jars: Path) -> None:
    port = localbroker.free_port_pair()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(localbroker.PortInUseError, match=f"port {port} .* already in use"):
            localbroker.start(port, tmp_path, libs=server_jars)


@pytest.mark.broker
def test_stop_is_clean_and_repeatable(plain_broker: RunningBroker) -> None:
    pid = localbroker.status(plain_broker.port, plain_broker.home).pid
    assert pid is not None

    assert localbroker.stop(plain_broker.port, plain_broker.home) is True

    state = localbroker.status(plain_broker.port, plain_broker.home)
    assert (state.running, state.pid) == (False, None)
    assert not (state.data_dir / "broker.pid").exists()
    assert not Path(f"/proc/{pid}").exists()
    assert localbroker.stop(plain_broker.port, plain_broker.home) is False


@pytest.mark.broker
def test_broker_dying_during_start_reports_its_log(
    plain_broker: RunningBroker, server_jars: Path
) -> None:
    # Runs after the stop test: corrupt the stopped broker's identity so Kafka exits.
    meta = plain_broker.home / f"broker-{plain_broker.port}" / "kraft-logs" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))

    with pytest.raises(localbroker.BrokerStartError) as raised:
        localbroker.start(plain_broker.port, plain_broker.home, timeout=60, libs=server_jars)

    message = str(raised.value)
    assert "exited while starting" in message
    assert "last lines of" in message and "server.log" in message
    assert "node" in message.split("server.log", 1)[1]  # the tail names the bad node id
    assert localbroker.status(plain_broker.port, plain_broker.home).running is False


@pytest.mark.broker
def test_sasl_scram_authentication_and_acls(
    tmp_path_factory: pytest.TempPathFactory, server_jars: Path
) -> None:
    home = tmp_path_factory.mktemp("sasl-home")
    port = localbroker.free_port_pair()
    security = localbroker.ScramSecurity()
    bootstrap = localbroker.start(port, home, security="sasl_scram", libs=server_jars)
    try:
        assert localbroker.status(port, home).security == "sasl_scram"
        admin = AdminClient({"bootstrap.servers": bootstrap, **security.client_config("admin")})
        topic = create_topic(admin, "secured")
        assert topic in admin.list_topics(timeout=10).topics

        wrong = {**security.client_config("worker"), "sasl.password": "not-the-password"}
        assert _client_errors(bootstrap, wrong) == [KafkaError._AUTHENTICATION]

        worker = security.client_config("worker")
        assert _produce_one(bootstrap, worker, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED

        acl = AclBinding(
            ResourceType.TOPIC,
            topic,
            ResourcePatternType.LITERAL,
            "User:worker",
            "*",
            AclOperation.WRITE,
            AclPermissionType.ALLOW,
        )
        for future in admin.create_acls([acl]).values():
            future.result(30)
        deadline = time.monotonic() + 20
        outcome = _produce_one(bootstrap, worker, topic)
        while outcome is not None and time.monotonic() < deadline:  # ACLs propagate async
            time.sleep(0.5)
            outcome = _produce_one(bootstrap, worker, topic)
        assert outcome is None
        admin_reader = security.client_config("admin")
        assert read_all(bootstrap, topic, **admin_reader) == [(b"k", b"v")]
    finally:
        localbroker.stop(port, home)


def _quiet(config: dict[str, Any]) -> dict[str, Any]:
    import logging

    logger = logging.getLogger("test.localbroker.quiet")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return {**config, "logger": logger}


def _client_errors(bootstrap: str, config: dict[str, str]) -> list[int]:
    """Distinct error codes a producer reports while trying to connect for up to 10 s."""
    errors: list[KafkaError] = []
    producer = Producer(
        _quiet({"bootstrap.servers": bootstrap, **config, "error_cb": errors.append})
    )
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        producer.poll(0.1)
    return sorted({e.code() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN})


def _produce_one(bootstrap: str, config: dict[str, str], topic: str) -> int | None:
    """Produce one record; the delivery error code, or None when it was acknowledged."""
    outcome: list[KafkaError | None] = []
    producer = Producer(
        _quiet({"bootstrap.servers": bootstrap, **config, "message.timeout.ms": 10000})
    )
    producer.produce(topic, b"v", key=b"k", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(15)
    assert len(outcome) == 1
    return None if outcome[0] is None else outcome[0].code()


# --- no broker needed: what a user without Java sees ------------------------------------


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A PATH with no java and no mvn on it (and no JAVA_HOME)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("STREAM_BOOTSTRAP_SERVERS", raising=False)
    return bin_dir


def _fake_java(bin_dir: Path, version: str) -> None:
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2020-01-01' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)


def test_missing_java_names_what_to_install(no_java: Path, tmp_path: Path) -> None:
    with pytest.raises(localbroker.PrerequisiteMissingError) as raised:
        localbroker.ensure_server_jars(tmp_path / "home")

    message = str(raised.value)
    assert "`java` was not found on PATH" in message
    assert INSTALL_HINT in message
    assert "\n" not in message


def test_start_without_java_raises_and_leaves_no_broker(no_java: Path, tmp_path: Path) -> None:
    port = localbroker.free_port_pair()
    with pytest.raises(localbroker.PrerequisiteMissingError, match="Java 17"):
        localbroker.start(port, tmp_path / "home")
    assert not (tmp_path / "home" / f"broker-{port}" / "broker.pid").exists()


def test_old_java_is_rejected(no_java: Path, tmp_path: Path) -> None:
    _fake_java(no_java, "11.0.2")
    with pytest.raises(localbroker.PrerequisiteMissingError, match="is Java 11") as raised:
        localbroker.find_java()
    assert INSTALL_HINT in str(raised.value)


def test_missing_maven_is_reported_when_jars_must_be_fetched(no_java: Path, tmp_path: Path) -> None:
    _fake_java(no_java, "17.0.15")
    with pytest.raises(localbroker.PrerequisiteMissingError, match="`mvn` was not found"):
        localbroker.ensure_server_jars(tmp_path / "empty-home")


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="stream")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_start_without_java_prints_one_line_and_exits_1(
    no_java: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(localbroker.free_port_pair())
    code = _run_cli("broker", "start", "--port", port, "--home", str(tmp_path / "home"))

    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("stream broker start: error: the local Kafka broker needs Java 17+")
    assert INSTALL_HINT in err


def test_cli_start_with_external_cluster_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_BOOTSTRAP_SERVERS", "kafka.example:9092")
    code = _run_cli("broker", "start", "--home", str(tmp_path / "home"))

    assert code == 0
    assert "using the Kafka cluster at kafka.example:9092" in capsys.readouterr().out
    assert not (tmp_path / "home").exists()


def test_cli_status_of_stopped_broker_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run_cli("broker", "status", "--port", "41999", "--home", str(tmp_path))

    assert code == 3
    assert "running:   no" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


@pytest.mark.broker
def test_topic_factory_creates_ready_topics_with_config(
    topic_factory: Any, kafka_admin: AdminClient
) -> None:
    from confluent_kafka.admin import ConfigResource

    name = topic_factory("factory", partitions=3, config={"cleanup.policy": "compact"})

    assert name.startswith("factory-")
    metadata = kafka_admin.list_topics(topic=name, timeout=10).topics[name]
    assert sorted(metadata.partitions) == [0, 1, 2]
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = kafka_admin.describe_configs([resource])[resource].result(30)
    assert configs["cleanup.policy"].value == "compact"
