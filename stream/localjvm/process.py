"""Running a JVM service as a detached process and finding it again later.

A local service outlives the command that started it (``stream broker start`` returns
at once), so it runs in its own session with its output appended to its log; a pid
file (:mod:`stream.localjvm.service`) lets a later ``stop`` or ``status`` find it. A pid
is only trusted if that process is alive and its command line is the service's —
pids get reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

# Services this Python process started: kept so they are reaped (no zombies that
# look alive) and so Popen does not warn about a child it forgot.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def launch_detached(command: Sequence[str], cwd: Path, log_file: Path) -> int:
    """Start ``command`` in a new session, its output appended to ``log_file``; return its pid."""
    with log_file.open("ab") as log:
        child = subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    return child.pid


def is_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rpartition(")")[2].split()[0] != "Z"


def command_line(pid: int) -> str | None:
    """The process's command line, or None where ``/proc`` is unavailable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (a JVM service shuts down cleanly), then SIGKILL if alive after ``timeout`` s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 10.0)
    _CHILDREN.pop(pid, None)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def tail(path: Path, lines: int = 25, since: int = 0) -> str:
    """The last ``lines`` lines of a text file written after byte ``since`` ("" if none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(since, handle.tell() - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes, 0 if it does not exist (where a new run's log output begins)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def rotate_log(log: Path, max_bytes: int) -> None:
    """Keep a log bounded across restarts: move one larger than ``max_bytes`` to ``<log>.1``."""
    try:
        if log.stat().st_size > max_bytes:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass
