"""Start, stop and inspect the project-managed schema registry.

One registry per ``(home, port)``: an Apicurio Registry JVM serving the Confluent-
compatible API at ``http://127.0.0.1:<port>/apis/ccompat/v7``, its Quarkus management
interface (health, metrics) on ``127.0.0.1:<port + 1>`` instead of ``*:9000``, global
compatibility rule ``BACKWARD`` (Confluent's default), storage in memory (a restart
starts empty — right for tests and the demo, which register what they use) unless
``start(persistent=True)`` keeps it in an H2 file under ``storage/``. Files live
in ``<home>/registry-<port>/``::

    registry.pid  registry.json  registry.log  .lock

``start`` is idempotent, like :func:`stream.localbroker.start`; the process helpers
(detached launch, pid checks, SIGTERM then SIGKILL, log tail), the inter-process lock and
the port checks are the local broker's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from stream.localbroker.locking import exclusive_lock
from stream.localbroker.paths import resolve_home
from stream.localbroker.ports import HOST, port_is_free
from stream.localbroker.process import command_line, is_alive, launch_detached, tail, terminate
from stream.registry.dist import REGISTRY_VERSION, ensure_distribution, find_java
from stream.registry.errors import RegistryPortInUseError, RegistryStartError
from stream.registry.readiness import probe, wait_until_ready

DEFAULT_PORT = 8081
URL_ENV = "STREAM_SCHEMA_REGISTRY_URL"
API_PATH = "/apis/ccompat/v7"
HEAP = "384m"
_ROTATE_LOG_AT_BYTES = 20 * 1024 * 1024
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
class RegistryPaths:
    data_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "registry.pid"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "registry.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / ".lock"


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
            _await_ready(paths, url, timeout, pid, log_start=0)
            return url
        _require_free_ports(port, home_dir)
        java = find_java()
        app = app if app is not None else ensure_distribution(home_dir)
        _rotate_log(paths.log_file)
        log_start = _size(paths.log_file)
        storage = paths.data_dir / "storage" / "registry" if persistent else None
        command = registry_command(java, app, port, storage)
        pid = launch_detached(command, cwd=paths.data_dir, log_file=paths.log_file)
        paths.pid_file.write_text(f"{pid}\n", encoding="ascii")
        state = {"version": REGISTRY_VERSION, "url": url, "java": str(java), "app": str(app)}
        paths.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        try:
            _await_ready(paths, url, timeout, pid, log_start)
        except RegistryStartError:
            terminate(pid, timeout=10.0)
            paths.pid_file.unlink(missing_ok=True)
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
    if not paths.data_dir.is_dir():
        return False
    with exclusive_lock(paths.lock_file):
        pid = running_pid(paths, port)
        if pid is not None:
            terminate(pid, timeout)
        paths.pid_file.unlink(missing_ok=True)
    return pid is not None


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
    )


def running_pid(paths: RegistryPaths, port: int) -> int | None:
    """Pid of our registry for ``paths`` if it runs; a stale pid file is removed."""
    try:
        pid = int(paths.pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    if is_alive(pid):
        cmdline = command_line(pid)
        ours = cmdline is None or (
            "quarkus-run.jar" in cmdline and f"-Dquarkus.http.port={port} " in cmdline + " "
        )
        if ours:
            return pid
    paths.pid_file.unlink(missing_ok=True)
    return None


def _require_free_ports(port: int, home: Path) -> None:
    for needed, role in ((port, "API"), (port + 1, "management")):
        if not port_is_free(needed):
            raise RegistryPortInUseError(
                f"port {needed} (the schema registry's {role} port) is already in use by another "
                f"process, not by a registry started from {home}; choose another port with "
                f"--port (the registry needs it and the next one)"
            )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _rotate_log(log: Path) -> None:
    try:
        if log.stat().st_size > _ROTATE_LOG_AT_BYTES:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass


def _await_ready(paths: RegistryPaths, url: str, timeout: float, pid: int, log_start: int) -> None:
    try:
        wait_until_ready(url, timeout, is_alive=lambda: is_alive(pid))
    except RegistryStartError as exc:
        raise RegistryStartError(
            f"{exc}; last lines of {paths.log_file}:\n{tail(paths.log_file, since=log_start)}"
        ) from exc
