"""What the local broker is configured with: pure functions, no I/O.

One node is both broker and controller (KRaft, static quorum: controller on
``port + 1``), so every replication factor and min ISR is 1. A node of a local
cluster (:mod:`stream.localbroker.cluster`) is the same node with the whole
voter set and the cluster's replication factor and min ISR. Choices that differ
from Kafka's defaults, and why:

* ``group.initial.rebalance.delay.ms=0`` — a consumer group forms at once instead
  of after 3 s; tests and the demo start many groups.
* ``offsets.topic.num.partitions`` / ``transaction.state.log.num.partitions`` = 10
  (default 50) — fewer files and faster first use of groups and transactions on a
  single development node.
* ``log.cleaner.backoff.ms=1000`` (default 15 s) — the cleaner runs (it is on by
  default; stated explicitly because compaction must work) and compacts soon
  after a segment rolls, so compaction is observable in seconds.
* ``auto.create.topics.enable`` keeps Kafka's default (true).

Security mode ``sasl_scram`` puts a ``SASL_PLAINTEXT`` listener with SCRAM-SHA-256
in front of clients and turns on ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false``. The controller listener stays
PLAINTEXT, where every connection — the node's own broker half included — is
``User:ANONYMOUS``; that principal is a super user so the broker may register
with its controller. It is bound to 127.0.0.1 like every listener here: this is
a local test broker, not a hardened deployment.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from stream.errors import ConfigError

SCRAM_MECHANISM = "SCRAM-SHA-256"
SASL_LISTENER = "SASL_PLAINTEXT"
DEFAULT_SCRAM_USERS: Mapping[str, str] = MappingProxyType(
    {"admin": "admin-secret", "worker": "worker-secret"}
)
_SAFE_CREDENTIAL = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ScramSecurity:
    """SASL/SCRAM-SHA-256 with ACLs. ``users`` maps user name to password; ``super_user``
    (which must be one of them) is also the identity the broker uses to talk to itself."""

    users: Mapping[str, str] = field(default_factory=lambda: DEFAULT_SCRAM_USERS)
    super_user: str = "admin"

    def __post_init__(self) -> None:
        if self.super_user not in self.users:
            raise ConfigError("security.users", f"must include the super user {self.super_user!r}")
        for name, password in self.users.items():
            # Names and passwords end up in a JAAS line and a StorageTool argument; keep
            # them to characters that need no quoting in either.
            if not _SAFE_CREDENTIAL.fullmatch(name) or not _SAFE_CREDENTIAL.fullmatch(password):
                raise ConfigError(
                    "security.users",
                    f"user {name!r}: names and passwords may use only letters, digits and . _ -",
                )

    def client_config(self, user: str | None = None) -> dict[str, str]:
        """confluent-kafka settings to connect as ``user`` (default: the super user)."""
        name = user or self.super_user
        return {
            "security.protocol": SASL_LISTENER,
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": name,
            "sasl.password": self.users[name],
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user's SCRAM credential."""
        arguments: list[str] = []
        for name, password in self.users.items():
            arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return arguments


@dataclass(frozen=True)
class BrokerSettings:
    """Inputs of :func:`server_properties`."""

    port: int
    log_dirs: Path
    security: ScramSecurity | None = None
    node_id: int = 1
    host: str = "127.0.0.1"
    # A cluster node (see :mod:`stream.localbroker.cluster`) sets these three; a single
    # node is its own quorum and keeps one copy of everything.
    quorum_voters: str | None = None
    replication_factor: int = 1
    min_insync_replicas: int = 1

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def voters(self) -> str:
        """``controller.quorum.voters``: ``id@host:port`` of every controller."""
        if self.quorum_voters is not None:
            return self.quorum_voters
        return f"{self.node_id}@{self.host}:{self.controller_port}"

    @property
    def security_name(self) -> str:
        return "plaintext" if self.security is None else "sasl_scram"


def server_properties(settings: BrokerSettings) -> dict[str, str]:
    """The broker's ``server.properties`` as an ordered mapping."""
    host = settings.host
    listener = "PLAINTEXT" if settings.security is None else SASL_LISTENER
    replicas = str(settings.replication_factor)
    min_isr = str(settings.min_insync_replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(settings.node_id),
        "controller.quorum.voters": settings.voters,
        "controller.listener.names": "CONTROLLER",
        "listeners": f"{listener}://{host}:{settings.port},CONTROLLER://{host}:{settings.controller_port}",
        "advertised.listeners": f"{listener}://{host}:{settings.port}",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.log_dirs),
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.enable": "true",
        "log.cleaner.backoff.ms": "1000",
    }
    if settings.security is not None:
        props.update(_sasl_scram_properties(settings.security))
    return props


def _sasl_scram_properties(security: ScramSecurity) -> dict[str, str]:
    user = security.super_user
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{security.users[user]}";'
    )
    return {
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.{SASL_LISTENER.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{user};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }


def render_properties(props: Mapping[str, str]) -> str:
    """``key=value`` lines in the Java properties format (values need no escaping here)."""
    header = "# Written by `stream broker start`; rewritten on every start.\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like ``Uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):  # Kafka rejects ids that look like options
            return text


def container_environment(settings: BrokerSettings, advertised_host: str) -> dict[str, str]:
    """The same broker as environment variables for the ``apache/kafka`` Docker image.

    The image turns ``KAFKA_FOO_BAR`` into ``foo.bar`` (``__`` stands for ``_``,
    ``___`` for ``-``). Inside a container the client listener must bind all
    interfaces; clients reach it through the port published under the same
    number on ``advertised_host``.
    """
    props = server_properties(settings)
    listener = props["inter.broker.listener.name"]
    props["listeners"] = (
        f"{listener}://0.0.0.0:{settings.port},CONTROLLER://127.0.0.1:{settings.controller_port}"
    )
    props["advertised.listeners"] = f"{listener}://{advertised_host}:{settings.port}"
    environment = {_image_variable(key): value for key, value in props.items()}
    environment["CLUSTER_ID"] = new_cluster_id()
    return environment


def _image_variable(key: str) -> str:
    escaped = key.replace("_", "__").replace("-", "___").replace(".", "_")
    return "KAFKA_" + escaped.upper()
