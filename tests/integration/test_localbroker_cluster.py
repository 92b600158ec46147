"""The local three-node cluster under failure: what Kafka guarantees with RF 3 and min ISR 2.

One cluster serves the module (~15 s to start); after each test every node is brought
back (``restore``), so the tests do not depend on each other's order. Leadership moves
after the controller fences a silent broker (``broker.session.timeout.ms``, 9 s), so each
failure test spends 10-20 s waiting for that, as a real cluster would.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import ConfigResource, NewTopic

from stream.kafka import reader
from stream.localbroker import cli, netfaults
from stream.localbroker.cluster import ClusterLayout
from stream.localbroker.config import server_properties
from stream.localbroker.quorum import describe_quorum
from tests.conftest import unique_name
from tests.support.cluster import ClusterHandle, quiet_logger, wait_for

NODES = {1, 2, 3}
FAILOVER_TIMEOUT_S = 45.0
F = TypeVar("F", bound=Callable[..., None])


def cluster_test(test: F) -> F:
    """Marks a test that runs against the real cluster (the pure layout tests need none)."""
    marked: F = pytest.mark.broker(pytest.mark.slow(test))
    return marked


@pytest.fixture(autouse=True)
def _healthy_after(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "kafka_cluster" in request.fixturenames:
        request.getfixturevalue("kafka_cluster").restore()


# --- no broker: the cluster's layout and configuration ----------------------------------


def test_cluster_layout_ports_voters_and_defaults(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path, 9092, 3)
    props = server_properties(layout.settings(2))

    assert layout.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert props["node.id"] == "2"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    )
    assert {
        key: props[key] for key in props if key.endswith(("replication.factor", "isr", "replicas"))
    } == {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "share.coordinator.state.topic.replication.factor": "3",
        "share.coordinator.state.topic.min.isr": "2",
    }
    assert layout.paths(2).data_dir == tmp_path / "cluster-9092" / "node-2"


def test_netns_layout_stays_in_the_test_subnet_and_interface_name_limits(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path, 65533, 3, netns=True)
    net = layout.net

    assert net.subnet == "10.77.253.0/24"
    assert [layout.host(n) for n in (1, 2, 3)] == ["10.77.253.11", "10.77.253.12", "10.77.253.13"]
    assert all(len(name) <= 15 for name in (net.bridge, net.veth(3)))  # IFNAMSIZ - 1
    assert layout.settings(1).voters.startswith("1@10.77.253.11:65534,")


# --- the running cluster ------------------------------------------------------------------


def create_topic(cluster: ClusterHandle, prefix: str, partitions: int = 1) -> str:
    """A topic with the cluster's defaults (no replication factor given), fully in sync."""
    name = unique_name(prefix)
    admin = cluster.admin()
    admin.create_topics([NewTopic(name, num_partitions=partitions)])[name].result(30)
    cluster.wait_full_isr(name)
    return name


def producer(bootstrap: str, **config: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "logger": quiet_logger(),
            "linger.ms": 5,
            **config,
        }
    )


def read_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every value in ``topic``. Right after a failover a fresh client may not know the
    partition yet ("Unknown partition" from the watermark lookup): that is retried."""
    conf = {"bootstrap.servers": bootstrap, "logger": quiet_logger()}

    def read() -> list[bytes]:
        return [m.value() for m in reader.read_to_end(conf, topic, timeout=60)]

    last_error: KafkaException | None = None
    for _ in range(10):
        try:
            return read()
        except KafkaException as exc:
            last_error = exc
            time.sleep(1.0)
    raise AssertionError(f"could not read {topic}: {last_error}")


@cluster_test
def test_three_voters_and_an_active_controller(kafka_cluster: ClusterHandle) -> None:
    state = kafka_cluster.status()

    assert state.quorum is not None
    assert set(state.quorum.voters) == NODES
    assert state.quorum.observers == {}  # every node is a voter, none only a broker
    assert state.active_controller in NODES
    assert [(node.node, node.state) for node in state.nodes] == [(n, "up") for n in (1, 2, 3)]
    brokers = kafka_cluster.admin().describe_cluster(request_timeout=10).result(15).nodes
    assert sorted(broker.id for broker in brokers) == [1, 2, 3]


@cluster_test
def test_topics_get_rf3_and_min_isr2_by_default(kafka_cluster: ClusterHandle) -> None:
    topic = create_topic(kafka_cluster, "defaults", partitions=3)
    admin = kafka_cluster.admin()

    for meta in kafka_cluster.partitions(topic).values():
        assert sorted(meta.replicas) == [1, 2, 3]
        assert sorted(meta.isrs) == [1, 2, 3]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    topic_config = admin.describe_configs([resource])[resource].result(30)
    assert topic_config["min.insync.replicas"].value == "2"
    broker = ConfigResource(ConfigResource.Type.BROKER, "1")
    broker_config = admin.describe_configs([broker])[broker].result(30)
    assert {
        key: broker_config[key].value
        for key in (
            "default.replication.factor",
            "min.insync.replicas",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
        )
    } == {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
    }


@cluster_test
def test_acks_all_survives_kill_of_the_partition_leader(kafka_cluster: ClusterHandle) -> None:
    topic = create_topic(kafka_cluster, "kill-leader")
    leader = kafka_cluster.leaders(topic)[0]
    acked: list[bytes] = []
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(err)

    sender = producer(
        kafka_cluster.bootstrap,
        acks="all",
        **{"enable.idempotence": True, "message.timeout.ms": 90000},
    )
    total = 20000
    for seq in range(total):
        if seq == total // 2:
            kafka_cluster.kill(leader)  # with half the records sent, many still in flight
        sender.produce(topic, f"{seq:06d}".encode(), key=b"k", on_delivery=delivered)
        sender.poll(0)
    assert sender.flush(FAILOVER_TIMEOUT_S + 60) == 0

    survivors = ",".join(kafka_cluster.listener(n) for n in NODES - {leader})
    new_leader = kafka_cluster.leaders(topic, survivors)[0]
    assert new_leader in NODES - {leader}
    assert failed == []
    assert len(acked) == total
    values = read_values(survivors, topic)
    assert len(values) == len(set(values)) == total  # idempotence: no duplicates
    assert set(values) == set(acked)
    assert values == sorted(values)  # and one key's order held across the failover


@cluster_test
def test_two_nodes_down_refuses_acks_all_with_not_enough_replicas(
    kafka_cluster: ClusterHandle,
) -> None:
    topic = create_topic(kafka_cluster, "min-isr")
    leader = kafka_cluster.leaders(topic)[0]
    down = sorted(NODES - {leader})
    for node in down:  # clean stops: the controller takes each out of the ISR
        kafka_cluster.stop(node)
    only = kafka_cluster.listener(leader)
    wait_for(
        f"ISR of {topic} shrunk to the leader {leader}",
        lambda: kafka_cluster.partitions(topic, only)[0].isrs == [leader],
        FAILOVER_TIMEOUT_S,
    )

    def produce_one(acks: str) -> int | None:
        outcome: list[KafkaError | None] = []
        sender = producer(
            only,
            acks=acks,
            retries=0,
            **{"enable.idempotence": False, "message.timeout.ms": 10000},
        )
        sender.produce(topic, b"v", on_delivery=lambda err, _msg: outcome.append(err))
        sender.flush(15)
        assert len(outcome) == 1
        return None if outcome[0] is None else outcome[0].code()

    assert produce_one("all") == KafkaError.NOT_ENOUGH_REPLICAS
    assert produce_one("1") is None  # the partition is up; only min.insync.replicas refuses
    # ...but below min ISR the high watermark stands still (KIP-966, Kafka 4.x): the
    # acks=1 record is stored and not readable until enough replicas have it again.
    assert read_values(only, topic) == []
    for node in down:
        kafka_cluster.start(node)
    kafka_cluster.wait_full_isr(topic, timeout=FAILOVER_TIMEOUT_S)
    assert read_values(kafka_cluster.bootstrap, topic) == [b"v"]


@cluster_test
def test_isolated_node_loses_its_leaderships_and_rejoins(kafka_cluster: ClusterHandle) -> None:
    topic = create_topic(kafka_cluster, "isolate", partitions=6)
    before = kafka_cluster.leaders(topic)
    victim = max(NODES, key=lambda n: sum(leader == n for leader in before.values()))
    led = sorted(p for p, leader in before.items() if leader == victim)
    assert led, f"node {victim} leads no partition of {topic}: {before}"
    others = kafka_cluster.bootstrap_without(victim)

    def moved() -> dict[int, int] | None:
        leaders = kafka_cluster.leaders(topic, others)
        return leaders if victim not in leaders.values() else None

    kafka_cluster.isolate(victim)
    after = wait_for(
        f"new leaders for partitions {led} of isolated node {victim}", moved, FAILOVER_TIMEOUT_S
    )
    assert {after[p] for p in led} <= NODES - {victim}
    assert all(victim not in meta.isrs for meta in kafka_cluster.partitions(topic, others).values())
    sender = producer(others, acks="all", **{"message.timeout.ms": 30000})
    for partition in range(6):  # two in-sync replicas are enough for acks=all
        sender.produce(topic, b"during", partition=partition)
    assert sender.flush(40) == 0

    kafka_cluster.heal(victim)
    kafka_cluster.wait_full_isr(topic, timeout=FAILOVER_TIMEOUT_S)
    assert len(read_values(kafka_cluster.bootstrap, topic)) == 6


@cluster_test
def test_paused_node_is_reported_and_answers_again_after_resume(
    kafka_cluster: ClusterHandle,
) -> None:
    node = 3
    kafka_cluster.pause(node)
    state = kafka_cluster.status()
    assert state.nodes[node - 1].state == "paused"
    host, _, port = kafka_cluster.listener(node).rpartition(":")
    address = [(host, int(port))]
    # the kernel still accepts its connections; the JVM answers no request
    assert describe_quorum(address, timeout=2.0) is None

    kafka_cluster.resume(node)
    assert kafka_cluster.status().nodes[node - 1].state == "up"
    answer = wait_for("an answer from the resumed node", lambda: describe_quorum(address), 10)
    assert set(answer.voters) == NODES


@cluster_test
def test_cli_status_shows_every_node_and_the_active_controller(
    kafka_cluster: ClusterHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="stream")
    cli.register(parser.add_subparsers(dest="command"))
    argv = [
        "broker",
        "status",
        "--port",
        str(kafka_cluster.port),
        "--home",
        str(kafka_cluster.home),
    ]
    args = parser.parse_args(argv)
    active = kafka_cluster.status().active_controller

    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "3 of 3 nodes running" in out
    assert f"controller: node {active} is active" in out and "voters 1 2 3" in out
    for node in (1, 2, 3):
        pid = kafka_cluster.status().nodes[node - 1].pid
        assert f"node {node}:     up        pid {pid}" in out
        assert kafka_cluster.listener(node) in out


def _connect_seconds(listener: str) -> float:
    host, _, port = listener.rpartition(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10):
        return time.monotonic() - started


@cluster_test
def test_degraded_link_adds_delay(kafka_cluster: ClusterHandle) -> None:
    if not kafka_cluster.netns:
        pytest.skip(f"no network namespaces here: {kafka_cluster.netns_error}")
    node = 2
    try:
        kafka_cluster.delay(node, delay_ms=200, loss_percent=0)
    except netfaults.NetemUnavailableError as exc:
        pytest.skip(f"tc netem is not available: {exc}")
    slow = statistics.median(_connect_seconds(kafka_cluster.listener(node)) for _ in range(5))
    kafka_cluster.clear(node)
    fast = statistics.median(_connect_seconds(kafka_cluster.listener(node)) for _ in range(5))

    assert slow >= 0.2
    assert fast < 0.05
