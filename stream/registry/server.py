"""Start, stop and inspect the project-managed schema registry.

One registry per ``(home, port)``: an Apicurio Registry JVM serving the Confluent-
compatible API at ``http://127.0.0.1:<port>/apis/ccompat/v7``, its Quarkus management
interface (health, metrics) on ``127.0.0.1:<port + 1>`` instead of ``*:9000``, global
compatibility rule ``BACKWARD`` (Confluent's default), storage in memory (a restart
starts empty — right for tests and the demo, which register what they use) unless
``start(persistent=True)`` keeps it in an H2 file under ``storage/``. Files live
in ``<home>/registry-<port>/``::

    registry.pid  registry.json  registry.log  .lock

``start`` is idempotent, like :func:`stream.localbroker.start`; the pid file, the
detached launch, SIGTERM then SIGKILL, the log tail on a failed start, the inter-process
lock and the port checks are :mod:`stream.localjvm`'s, shared with the local broker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from stream.localjvm import service
from stream.localjvm.home import resolve_home
from stream.localjvm.locking import exclusive_lock
from stream.localjvm.ports import HOST, require_free_ports
from stream.localjvm.process import is_alive
from stream.localjvm.service import ServiceFiles
from stream.registry.dist import REGISTRY_VERSION, ensure_distribution, find_java
from stream.registry.errors import RegistryError, RegistryPortInUseError, RegistryStartError
from stream.registry.readiness import probe, wait_until_ready

DEFAULT_PORT = 8081
URL_ENV = "STREAM_SCHEMA_REGISTRY_URL"
API_PATH = "/apis/ccompat/v7"
HEAP = "384m"
JVM_OPTIONS = (
    "-XX:+UseSerialGC",  # one small heap on a shared 2-core machine
    # Start-up is what tests and the demo wait for; the C2 compiler only pays off later.
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
#: Class-data sharing archive written by the first run (Java 19+ ``AutoCreateSharedArchive``,
#: rewritten if the JVM changes) and mapped by later ones: with C1 only, start-up on a busy
#: 2-core machine went from ~20 s to ~7-10 s (load average 12).
CDS_ARCHIVE = "registry-cds.jsa"


@dataclass(frozen=True)
class RegistryPaths(ServiceFiles):
    """The files of the registry on one port: ``registry.pid``, ``registry.json``,
    ``registry.log``, ``.lock`` and, when persistent, the H2 database in ``storage/``."""

    STEM: ClassVar[str] = "registry"
    LOG_NAME: ClassVar[str] = "registry.log"

    @property
    def storage(self) -> Path:
        """The H2 database file (without its ``.mv.db`` suffix) of a persistent registry."""
        return self.data_dir / "storage" / "registry"


@dataclass(frozen=True)
class RegistryStatus:
    """What ``stream registry status`` reports. ``external`` is ``STREAM_SCHEMA_REGISTRY_URL``
    when set; ``external_error`` is why it did not answer (``None`` if it did)."""

    running: bool
    pid: int | None
    url: str
    data_dir: Path
    version: str
    external: str | None = None
    external_error: str | None = None
    #: ``"memory"``, or ``"h2:<database file>"`` for a persistent registry (its last start).
    storage: str = "memory"


def registry_paths(home: Path, port: int) -> RegistryPaths:
    return RegistryPaths(data_dir=home / f"registry-{port}")


def local_url(port: int = DEFAULT_PORT) -> str:
    """The Confluent-compatible API base URL of the local registry on ``port``."""
    return f"http://{HOST}:{port}{API_PATH}"


def external_url() -> str | None:
    """``STREAM_SCHEMA_REGISTRY_URL`` if set (an existing registry to use instead)."""
    return os.environ.get(URL_ENV) or None


def start(
    port: int = DEFAULT_PORT,
    home: Path | str | None = None,
    timeout: float = 90.0,
    *,
    app: Path | None = None,
    persistent: bool = False,
) -> str:
    """Start the local registry (or find it running) and return its API URL.

    ``app`` is an unpacked distribution (:func:`ensure_distribution`); by default it is
    fetched into ``home``. ``persistent``: keep schemas in an H2 database file in the
    registry's data directory (``registry-<port>/storage/``) instead of in memory, so a
    restart (with ``persistent`` again) serves the same schemas under the same ids.
    """
    home_dir = resolve_home(home)
    paths = registry_paths(home_dir, port)
    url = local_url(port)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(paths.lock_file):
        pid = running_pid(paths, port)
        if pid is not None:
            _require_same_storage(paths, port, persistent)
            _await_ready(paths, url, timeout, pid, log_start=0)
            return url
        require_free_ports(
            ((port, "API"), (port + 1, "management")),
            service="schema registry",
            short="registry",
            home=home_dir,
            error=RegistryPortInUseError,
        )
        java = find_java()
        app = app if app is not None else ensure_distribution(home_dir)
        storage = paths.storage if persistent else None
        pid, log_start = service.launch(paths, registry_command(java, app, port, storage))
        state = {
            "version": REGISTRY_VERSION,
            "url": url,
            "java": str(java),
            "app": str(app),
            "storage": "memory" if storage is None else f"h2:{storage}",
        }
        paths.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        try:
            _await_ready(paths, url, timeout, pid, log_start)
        except RegistryStartError:
            service.abandon(paths, pid)
            raise
    return url


def registry_command(java: Path, app: Path, port: int, storage: Path | None = None) -> list[str]:
    """The ``java -jar quarkus-run.jar`` command line with our settings as system properties;
    ``storage``: an H2 database file (without suffix) instead of in-memory storage."""
    persistence = [] if storage is None else [f"-Dapicurio.datasource.url=jdbc:h2:file:{storage}"]
    return [
        str(java),
        f"-Xmx{HEAP}",
        *JVM_OPTIONS,
        "-XX:+AutoCreateSharedArchive",
        f"-XX:SharedArchiveFile={app.parent / CDS_ARCHIVE}",
        f"-Dquarkus.http.host={HOST}",
        f"-Dquarkus.http.port={port}",
        f"-Dquarkus.management.host={HOST}",
        f"-Dquarkus.management.port={port + 1}",
        "-Dapicurio.rules.global.compatibility=BACKWARD",
        *persistence,
        "-jar",
        str(app / "quarkus-run.jar"),
    ]


def stop(port: int = DEFAULT_PORT, home: Path | str | None = None, timeout: float = 30.0) -> bool:
    """Stop the local registry on ``port`` (SIGTERM, SIGKILL after ``timeout`` s).

    Returns whether a running registry was stopped; not running is not an error.
    """
    paths = registry_paths(resolve_home(home), port)
    return service.stop(paths, _is_registry_on(port), timeout)


def status(port: int = DEFAULT_PORT, home: Path | str | None = None) -> RegistryStatus:
    paths = registry_paths(resolve_home(home), port)
    pid = running_pid(paths, port)
    external = external_url()
    return RegistryStatus(
        running=pid is not None,
        pid=pid,
        url=local_url(port),
        data_dir=paths.data_dir,
        version=REGISTRY_VERSION,
        external=external,
        external_error=probe(external) if external else None,
        storage=_storage_of(paths),
    )


def _storage_of(paths: RegistryPaths) -> str:
    """The storage the registry of ``paths`` was last started with (its state file)."""
    try:
        state = json.loads(paths.state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "memory"
    return str(state.get("storage", "memory")) if isinstance(state, dict) else "memory"


def _require_same_storage(paths: RegistryPaths, port: int, persistent: bool) -> None:
    """A running registry is only "already running" if it keeps schemas where asked to."""
    running = _storage_of(paths)
    if (running != "memory") == persistent:
        return
    raise RegistryError(
        f"the registry on port {port} is running with storage {running!r}, not "
        f"{'an H2 file' if persistent else 'in memory'}; stop it first "
        f"(stream registry stop --port {port})"
    )


def running_pid(paths: RegistryPaths, port: int) -> int | None:
    """Pid of our registry for ``paths`` if it runs; a stale pid file is removed."""
    return service.running_pid(paths, _is_registry_on(port))


def _is_registry_on(port: int) -> Callable[[str], bool]:
    """A command line is our registry's if it runs ``quarkus-run.jar`` on ``port``."""
    return lambda cmdline: (
        "quarkus-run.jar" in cmdline and f"-Dquarkus.http.port={port} " in cmdline + " "
    )


def _await_ready(paths: RegistryPaths, url: str, timeout: float, pid: int, log_start: int) -> None:
    service.await_ready(
        paths,
        lambda: wait_until_ready(url, timeout, is_alive=lambda: is_alive(pid)),
        error=RegistryStartError,
        log_start=log_start,
    )
