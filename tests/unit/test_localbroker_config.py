"""What the local broker is configured with: server.properties content, SCRAM users,
the container variant, and pure helpers. No I/O."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from stream.errors import ConfigError
from stream.localbroker.config import (
    BrokerSettings,
    ScramSecurity,
    container_environment,
    new_cluster_id,
    render_properties,
    server_properties,
)
from stream.localbroker.jars import KAFKA_VERSION, java_major_version, pom_text
from stream.localbroker.paths import broker_paths, jar_cache_dir, resolve_home

LOG_DIRS = Path("/data/broker-9092/kraft-logs")


def parse(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_plain_single_node_kraft_properties() -> None:
    props = parse(render_properties(server_properties(BrokerSettings(9092, LOG_DIRS))))

    assert props == {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": "1@127.0.0.1:9093",
        "controller.listener.names": "CONTROLLER",
        "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:9092",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(LOG_DIRS),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.enable": "true",
        "log.cleaner.backoff.ms": "1000",
    }


def test_plain_mode_keeps_kafka_defaults_for_auto_create_and_security() -> None:
    props = server_properties(BrokerSettings(41000, LOG_DIRS))

    assert "auto.create.topics.enable" not in props
    assert not any(key.startswith(("sasl.", "authorizer.", "super.")) for key in props)


def test_sasl_scram_properties() -> None:
    props = server_properties(BrokerSettings(41000, LOG_DIRS, security=ScramSecurity()))

    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:41000,CONTROLLER://127.0.0.1:41001"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:41000"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["listener.security.protocol.map"] == (
        "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="admin-secret";'
    )
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:41001"


def test_scram_format_arguments_and_client_config() -> None:
    security = ScramSecurity(users={"admin": "a1", "alice": "b2"})

    assert security.format_arguments() == [
        "--add-scram",
        "SCRAM-SHA-256=[name=admin,password=a1]",
        "--add-scram",
        "SCRAM-SHA-256=[name=alice,password=b2]",
    ]
    assert security.client_config("alice") == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": "b2",
    }
    assert security.client_config()["sasl.username"] == "admin"


def test_default_scram_users() -> None:
    assert dict(ScramSecurity().users) == {"admin": "admin-secret", "worker": "worker-secret"}


@pytest.mark.parametrize(
    "users",
    [{"worker": "w"}, {"admin": "has space"}, {"admin": "a", "bad,name": "x"}, {"admin": 'q"'}],
)
def test_scram_users_are_validated(users: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        ScramSecurity(users=users)
    assert raised.value.field == "security.users"


def test_container_environment_uses_image_variable_names() -> None:
    settings = BrokerSettings(41000, Path("/tmp/kraft-combined-logs"), security=ScramSecurity())

    env = container_environment(settings, "localhost")

    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_LISTENERS"] == ("SASL_PLAINTEXT://0.0.0.0:41000,CONTROLLER://127.0.0.1:41001")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "SASL_PLAINTEXT://localhost:41000"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SCRAM___SHA___256_SASL_JAAS_CONFIG" in env
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("no version here", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major


def test_pom_pins_the_kafka_version_and_an_slf4j_binding() -> None:
    pom = pom_text()

    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom


def test_state_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAM_HOME", str(tmp_path / "state"))
    home = resolve_home()
    paths = broker_paths(home, 9092)

    assert home == tmp_path / "state"
    assert jar_cache_dir(home, "4.3.1") == tmp_path / "state" / "kafka-4.3.1" / "libs"
    assert paths.log_dirs == tmp_path / "state" / "broker-9092" / "kraft-logs"
    assert paths.server_log == tmp_path / "state" / "broker-9092" / "server.log"
    monkeypatch.delenv("STREAM_HOME")
    monkeypatch.chdir(tmp_path)
    assert resolve_home() == tmp_path / ".stream"
