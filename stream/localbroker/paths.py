"""Where the local broker keeps its jars and its data.

Everything lives under one state directory, ``$STREAM_HOME`` or ``./.stream``
(:mod:`stream.localjvm.home`; relative to the working directory, so each checkout has
its own broker and a ``rm -r .stream`` resets it)::

    <home>/kafka-<version>/libs/     Kafka server jars, fetched once by Maven
    <home>/broker-<port>/            one broker per client port
        server.properties  log4j2.properties  broker.json  broker.pid
        server.log                   the broker's log (log4j2 and JVM output)
        kraft-logs/                  Kafka's log.dirs (topic data and metadata)
    <home>/cluster-<port>/           a local multi-node cluster whose node 1 listens on <port>
        cluster.json  .lock          cluster id, node count, network namespaces or not
        node-<n>/                    node n's files, laid out like broker-<port>/ above
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from stream.localjvm.home import DEFAULT_HOME, HOME_ENV, resolve_home
from stream.localjvm.service import ServiceFiles

__all__ = [
    "DEFAULT_HOME",
    "HOME_ENV",
    "BrokerPaths",
    "broker_paths",
    "cluster_dir",
    "cluster_node_paths",
    "jar_cache_dir",
    "resolve_home",
]


def jar_cache_dir(home: Path, version: str) -> Path:
    """Directory holding the runtime jars of Kafka ``version``."""
    return home / f"kafka-{version}" / "libs"


@dataclass(frozen=True)
class BrokerPaths(ServiceFiles):
    """The files of the broker listening on one port (pid, state, lock: see ``ServiceFiles``)."""

    STEM: ClassVar[str] = "broker"
    LOG_NAME: ClassVar[str] = "server.log"
    ROTATE_LOG_AT_BYTES: ClassVar[int] = 50 * 1024 * 1024

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def server_log(self) -> Path:
        """The broker's log (log4j2 and JVM output)."""
        return self.log_file

    @property
    def formatted_marker(self) -> Path:
        """Written by ``kafka-storage format``; its presence means "already formatted"."""
        return self.log_dirs / "meta.properties"


def broker_paths(home: Path, port: int) -> BrokerPaths:
    return BrokerPaths(data_dir=home / f"broker-{port}")


def cluster_dir(home: Path, port: int) -> Path:
    """Directory of the local cluster whose first node listens on ``port``."""
    return home / f"cluster-{port}"


def cluster_node_paths(home: Path, port: int, node: int) -> BrokerPaths:
    return BrokerPaths(data_dir=cluster_dir(home, port) / f"node-{node}")
