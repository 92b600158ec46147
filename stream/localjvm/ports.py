"""Local TCP port checks: is a port free to bind, does something answer on it."""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing is bound to ``port`` (TIME_WAIT leftovers do not count: a JVM server
    binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port_pair(low: int = 41000, high: int = 41999) -> int:
    """A port ``p`` in ``[low, high)`` with ``p`` and ``p + 1`` both free (client + controller).

    Starts at a random point so parallel sessions rarely race for the same pair.
    """
    span = high - low
    offset = random.randrange(span)
    for step in range(span):
        port = low + (offset + step) % span
        if port_is_free(port) and port_is_free(port + 1):
            return port
    raise OSError(f"no two adjacent free ports between {low} and {high}")


def free_port_block(count: int, low: int = 41000, high: int = 41999) -> int:
    """A port ``p`` in ``[low, high)`` with ``p .. p + count - 1`` all free (a cluster's ports).

    Starts at a random point so parallel sessions rarely race for the same block.
    """
    span = high - low - count + 1
    offset = random.randrange(span)
    for step in range(span):
        port = low + (offset + step) % span
        if all(port_is_free(port + i) for i in range(count)):
            return port
    raise OSError(f"no {count} adjacent free ports between {low} and {high}")


def require_free_ports(
    ports: Sequence[tuple[int, str]],
    *,
    service: str,
    short: str,
    home: Path,
    error: type[Exception],
) -> None:
    """Raise ``error`` naming the first of ``(port, role)`` that something else holds.

    Called only when no service of ours runs on them (that case is "already running"),
    so the message can say it is another process and what to do.
    """
    for needed, role in ports:
        if not port_is_free(needed):
            raise error(
                f"port {needed} (the {service}'s {role} port) is already in use by another "
                f"process, not by a {short} started from {home}; choose another port with "
                f"--port (the {short} needs it and the next one)"
            )
