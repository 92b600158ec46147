"""A real, throwaway PostgreSQL for the connector tests (session scoped).

``initdb`` + ``pg_ctl start`` from the Debian ``postgresql`` package, in a
temporary directory, on a free port in 44400-44499, with its unix socket in
the same directory, durability switched off (``fsync=off``: a test cluster
has nothing to lose) and trust authentication for the superuser ``stream``.
PostgreSQL refuses to run as root, so under root the cluster runs as the
``postgres`` system user (``runuser``).

Missing binaries (``apt-get install postgresql``) skip the tests locally and
fail them when ``CI`` is set, so a CI image without PostgreSQL cannot pass
silently.

Use it from a test module::

    from tests.integration.postgres_fixture import postgres_server  # noqa: F401
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PORT_RANGE = range(44400, 44500)
SUPERUSER = "stream"
_START_TIMEOUT_S = 60


def unique_table(prefix: str = "t") -> str:
    """A table name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, or initdb on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    for port in PORT_RANGE:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


class PostgresServer:
    """One PostgreSQL cluster in ``base``; ``stop()``/``start()`` simulate an outage."""

    def __init__(self, bindir: Path, base: Path, port: int, run_as: list[str]) -> None:
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "socket"
        self.log = base / "postgres.log"
        self.port = port
        self._run_as = run_as

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = _START_TIMEOUT_S) -> None:
        cmd = [*self._run_as, str(self.bindir / args[0]), *args[1:]]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "-N"
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=50 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def connect(self, **kwargs: Any) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, **kwargs)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; rows if it returns any."""
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []


def _run_as_prefix(base: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        _missing("running as root needs the 'postgres' system user (from the postgresql package)")
        raise  # unreachable: _missing raises
    for path in (base, *base.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-c"]


#: One server per test process. Each module that imports the fixture gets its own
#: session-scoped fixture definition; they all share this server.
_shared: list[PostgresServer] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL for the whole session; stopped and deleted afterwards."""
    if _shared:
        yield _shared[0]
        return
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        _missing("psycopg is not installed (pip install 'stream-processor[postgres]')")
    bindir = find_bindir()
    if bindir is None:
        _missing("PostgreSQL is not installed (apt-get install postgresql)")
        return
    base = Path(tempfile.mkdtemp(prefix="stream-pg-"))
    (base / "socket").mkdir()
    os.chmod(base, 0o755)
    server = PostgresServer(bindir, base, _free_port(), _run_as_prefix(base))
    server.init()
    server.start()
    _shared.append(server)
    try:
        yield server
    finally:
        _shared.clear()
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
