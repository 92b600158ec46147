"""Start, stop and inspect the project-managed local Kafka broker.

One broker per ``(home, port)``: a single KRaft node (broker and controller in
one JVM) whose files live in ``<home>/broker-<port>/`` (see
:mod:`stream.localbroker.paths`). ``start`` is idempotent — if our broker on
that port is already up it returns at once — so scripts and test sessions can
call it unconditionally. Storage is formatted once, on first start; the
security mode chosen then sticks to that data directory. Pid file, launch, stop
and the log tail on a failed start are :mod:`stream.localjvm.service`'s.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from stream.localbroker.config import (
    BrokerSettings,
    ScramSecurity,
    new_cluster_id,
    render_properties,
    server_properties,
)
from stream.localbroker.errors import BrokerStartError, LocalBrokerError, PortInUseError
from stream.localbroker.jars import KAFKA_VERSION, ensure_server_jars, find_java
from stream.localbroker.paths import BrokerPaths, broker_paths, resolve_home
from stream.localbroker.process import java_command
from stream.localbroker.readiness import wait_until_ready
from stream.localjvm import service
from stream.localjvm.locking import exclusive_lock
from stream.localjvm.ports import HOST, require_free_ports
from stream.localjvm.process import is_alive

DEFAULT_PORT = 9092
BROKER_HEAP = "768m"
TOOL_HEAP = "256m"
_FORMAT_TIMEOUT_S = 180.0

SecurityOption = Literal["plaintext", "sasl_scram"] | ScramSecurity | None


@dataclass(frozen=True)
class BrokerStatus:
    """What ``stream broker status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    version: str
    security: str


def bootstrap_address(port: int) -> str:
    return f"{HOST}:{port}"


def start(
    port: int = DEFAULT_PORT,
    home: Path | str | None = None,
    timeout: float = 90.0,
    security: SecurityOption = None,
    *,
    libs: Path | None = None,
) -> str:
    """Start the local broker (or find it running) and return its bootstrap address.

    ``security="sasl_scram"`` (or a :class:`ScramSecurity` with your own users)
    requires SASL/SCRAM-SHA-256 and ACLs on the client listener. ``libs`` is a
    directory of Kafka server jars; by default they are fetched into ``home``.
    """
    scram = _scram(security)
    home_dir = resolve_home(home)
    paths = broker_paths(home_dir, port)
    bootstrap = bootstrap_address(port)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(paths.lock_file):
        pid = running_pid(paths)
        if pid is not None:
            _require_same_security(paths, scram, running=True)
            _await_ready(paths, bootstrap, timeout, scram, pid, log_start=0)
            return bootstrap
        require_free_ports(
            ((port, "client"), (port + 1, "controller")),
            service="broker",
            short="broker",
            home=home_dir,
            error=PortInUseError,
        )
        java = find_java()
        jar_dir = libs if libs is not None else ensure_server_jars(home_dir)
        settings = BrokerSettings(port=port, log_dirs=paths.log_dirs, security=scram)
        _write_config_files(paths, settings)
        if paths.formatted_marker.exists():
            _require_same_security(paths, scram, running=False)
        else:
            _format_storage(paths, settings, java, jar_dir)
        pid, log_start = launch_node(paths, java, jar_dir, heap=BROKER_HEAP)
        try:
            _await_ready(paths, bootstrap, timeout, scram, pid, log_start)
        except BrokerStartError:
            service.abandon(paths, pid)
            raise
    return bootstrap


def stop(port: int = DEFAULT_PORT, home: Path | str | None = None, timeout: float = 30.0) -> bool:
    """Stop the local broker on ``port``: SIGTERM, SIGKILL after ``timeout`` s.

    Returns whether a running broker was stopped; not running is not an error.
    """
    paths = broker_paths(resolve_home(home), port)
    return service.stop(paths, _is_broker_of(paths), timeout)


def status(port: int = DEFAULT_PORT, home: Path | str | None = None) -> BrokerStatus:
    paths = broker_paths(resolve_home(home), port)
    state = _read_state(paths)
    pid = running_pid(paths)
    return BrokerStatus(
        running=pid is not None,
        pid=pid,
        bootstrap=bootstrap_address(port),
        data_dir=paths.data_dir,
        version=state.get("version", KAFKA_VERSION),
        security=state.get("security", "plaintext"),
    )


def running_pid(paths: BrokerPaths) -> int | None:
    """Pid of our broker for ``paths`` if it runs; a stale pid file is removed."""
    return service.running_pid(paths, _is_broker_of(paths))


def _is_broker_of(paths: BrokerPaths) -> Callable[[str], bool]:
    """A command line is our broker's if it runs ``kafka.Kafka`` with our properties file."""
    return lambda cmdline: "kafka.Kafka" in cmdline and str(paths.server_properties) in cmdline


def launch_node(
    paths: BrokerPaths,
    java: Path,
    jar_dir: Path,
    *,
    heap: str,
    prefix: Sequence[str] = (),
) -> tuple[int, int]:
    """Launch the Kafka JVM of ``paths`` (configured and formatted) and record its pid.

    ``prefix`` runs it through another command that ends by exec-ing the JVM, so the
    pid stays the broker's (``ip netns exec NS``). Returns the pid and the size of
    ``server.log`` before the launch (where this run's output begins).
    """
    command = java_command(
        java,
        jar_dir,
        "kafka.Kafka",
        [str(paths.server_properties)],
        heap=heap,
        log4j_config=paths.log4j_config,
        logs_dir=paths.data_dir,
    )
    return service.launch(paths, [*prefix, *command])


def _scram(security: SecurityOption) -> ScramSecurity | None:
    if security is None or security == "plaintext":
        return None
    if security == "sasl_scram":
        return ScramSecurity()
    if isinstance(security, ScramSecurity):
        return security
    raise LocalBrokerError(f"unknown security mode {security!r}; use 'plaintext' or 'sasl_scram'")


def _security_name(scram: ScramSecurity | None) -> str:
    return "plaintext" if scram is None else "sasl_scram"


def _read_state(paths: BrokerPaths) -> dict[str, str]:
    try:
        loaded = json.loads(paths.state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(key): str(value) for key, value in loaded.items()}


def _require_same_security(paths: BrokerPaths, scram: ScramSecurity | None, running: bool) -> None:
    stored = _read_state(paths).get("security", "plaintext")
    wanted = _security_name(scram)
    if stored == wanted:
        return
    port = paths.data_dir.name.removeprefix("broker-")
    if running:
        raise LocalBrokerError(
            f"the broker on port {port} is running with security {stored!r}, not {wanted!r}; "
            f"stop it first (stream broker stop --port {port})"
        )
    raise LocalBrokerError(
        f"{paths.data_dir} was formatted for security {stored!r}, not {wanted!r}; "
        f"use another --port or --home, or delete that directory to start afresh"
    )


def _write_config_files(paths: BrokerPaths, settings: BrokerSettings) -> None:
    paths.server_properties.write_text(
        render_properties(server_properties(settings)), encoding="utf-8"
    )
    log4j = resources.files("stream.localbroker").joinpath("log4j2.properties")
    paths.log4j_config.write_text(log4j.read_text(encoding="utf-8"), encoding="utf-8")


def _format_storage(
    paths: BrokerPaths,
    settings: BrokerSettings,
    java: Path,
    libs: Path,
    cluster_id: str | None = None,
) -> None:
    """``kafka-storage format``: the one-time step that gives the node its cluster id
    (and, in SCRAM mode, its users' credentials). The nodes of a cluster share one id."""
    cluster_id = cluster_id or new_cluster_id()
    command = _format_command(paths, settings, java, libs, cluster_id)
    try:
        result = subprocess.run(
            command,
            cwd=paths.data_dir,
            capture_output=True,
            text=True,
            timeout=_FORMAT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerStartError(
            f"formatting {paths.log_dirs} took longer than {_FORMAT_TIMEOUT_S:.0f}s"
        ) from exc
    if result.returncode != 0 or not paths.formatted_marker.exists():
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerStartError(
            f"kafka-storage format failed for {paths.log_dirs} (exit code {result.returncode}):\n"
            f"{output}"
        )
    state = {"version": KAFKA_VERSION, "security": settings.security_name, "cluster_id": cluster_id}
    paths.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def _format_command(
    paths: BrokerPaths, settings: BrokerSettings, java: Path, libs: Path, cluster_id: str
) -> list[str]:
    arguments = ["format", "-t", cluster_id, "-c", str(paths.server_properties)]
    if settings.security is not None:
        arguments += settings.security.format_arguments()
    return java_command(
        java,
        libs,
        "kafka.tools.StorageTool",
        arguments,
        heap=TOOL_HEAP,
        log4j_config=paths.log4j_config,
        logs_dir=paths.data_dir,
        extra_options=("-XX:TieredStopAtLevel=1",),  # short-lived: skip the optimising JIT
    )


def _await_ready(
    paths: BrokerPaths,
    bootstrap: str,
    timeout: float,
    scram: ScramSecurity | None,
    pid: int,
    log_start: int,
) -> None:
    """Wait for the broker to answer; on failure show what it logged since ``log_start``."""
    client_config = None if scram is None else scram.client_config()
    service.await_ready(
        paths,
        lambda: wait_until_ready(
            bootstrap, timeout, client_config=client_config, is_alive=lambda: is_alive(pid)
        ),
        error=BrokerStartError,
        log_start=log_start,
    )
