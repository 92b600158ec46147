"""One local JVM service per data directory: its files, its pid, launching, stopping.

A service (the Kafka broker on one port, the schema registry on one port) keeps in its
data directory a pid file, a JSON state file, its log and a lock file. Which process is
"ours" is decided by the pid file *and* the process's command line (pids get reused), so
a stale pid file is removed instead of trusted. ``start`` in each service is idempotent
under the lock; what it does between the checks (formatting Kafka's storage, writing
configuration) is its own, the steps around that are here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from stream.localjvm.locking import exclusive_lock
from stream.localjvm.process import (
    command_line,
    file_size,
    is_alive,
    launch_detached,
    rotate_log,
    tail,
    terminate,
)


@dataclass(frozen=True)
class ServiceFiles:
    """The files of one service in ``data_dir``; subclasses name them (``STEM``, ``LOG_NAME``)."""

    data_dir: Path

    STEM: ClassVar[str] = "service"
    LOG_NAME: ClassVar[str] = "service.log"
    #: A larger log is moved to ``<log>.1`` at the next launch.
    ROTATE_LOG_AT_BYTES: ClassVar[int] = 20 * 1024 * 1024

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.STEM}.pid"

    @property
    def state_file(self) -> Path:
        return self.data_dir / f"{self.STEM}.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / self.LOG_NAME

    @property
    def lock_file(self) -> Path:
        return self.data_dir / ".lock"


def running_pid(files: ServiceFiles, is_ours: Callable[[str], bool]) -> int | None:
    """Pid of the service of ``files`` if it runs; a stale pid file is removed.

    ``is_ours`` is asked about the process's command line (not asked where ``/proc`` is
    unavailable: then a live pid is trusted).
    """
    try:
        pid = int(files.pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    if is_alive(pid):
        cmdline = command_line(pid)
        if cmdline is None or is_ours(cmdline):
            return pid
    files.pid_file.unlink(missing_ok=True)
    return None


def launch(files: ServiceFiles, command: Sequence[str]) -> tuple[int, int]:
    """Launch ``command`` detached in ``files.data_dir`` and record its pid.

    Returns the pid and the size of the log before the launch (where this run's output
    begins, for :func:`await_ready`'s message).
    """
    rotate_log(files.log_file, files.ROTATE_LOG_AT_BYTES)
    log_start = file_size(files.log_file)
    pid = launch_detached(command, cwd=files.data_dir, log_file=files.log_file)
    files.pid_file.write_text(f"{pid}\n", encoding="ascii")
    return pid, log_start


def await_ready(
    files: ServiceFiles,
    wait: Callable[[], None],
    *,
    error: type[Exception],
    log_start: int,
) -> None:
    """Run ``wait`` (a readiness wait); if it raises ``error``, raise it again with what the
    service logged since ``log_start`` — the reason a start failed is nearly always there."""
    try:
        wait()
    except error as exc:
        raise error(
            f"{exc}; last lines of {files.log_file}:\n{tail(files.log_file, since=log_start)}"
        ) from exc


def abandon(files: ServiceFiles, pid: int) -> None:
    """Stop a service that failed to start (SIGKILL after 10 s) and forget its pid."""
    terminate(pid, timeout=10.0)
    files.pid_file.unlink(missing_ok=True)


def stop(files: ServiceFiles, is_ours: Callable[[str], bool], timeout: float) -> bool:
    """Stop the service of ``files``: SIGTERM, SIGKILL after ``timeout`` s.

    Returns whether a running service was stopped; not running is not an error.
    """
    if not files.data_dir.is_dir():
        return False
    with exclusive_lock(files.lock_file):
        pid = running_pid(files, is_ours)
        if pid is not None:
            terminate(pid, timeout)
        files.pid_file.unlink(missing_ok=True)
    return pid is not None
