"""Where the peers run: each in its own environment, built on first use and cached.

The product's environment carries the current confluent-kafka; Quix Streams pins an
older one, and a peer's dependencies must not decide which client the product runs.
So no peer runs in the product's environment:

* **Python peers** (``quix``, ``faust-per-event``): a virtual environment per peer,
  ``<STREAM_HOME>/peer-venvs/<venv>``, from ``benchmarks/peers/requirements-<venv>.txt``
  (``python -m venv`` with this interpreter, then ``pip install -r``). The peer runs as
  ``<venv>/bin/python -m benchmarks.peers.<module>`` with the checkout on ``PYTHONPATH``.
* **Kafka Streams** (``kstreams``): the Maven project ``benchmarks/peers/kstreams`` is
  copied to ``<STREAM_HOME>/peers/kstreams-<digest>`` and built there with
  ``mvn -q -B package`` (jars from Maven Central into ``~/.m2``); it runs as
  ``java -jar target/kstreams-peer.jar``. Needs Java 17+ and Maven.

``<STREAM_HOME>`` is the local broker's cache directory (``$STREAM_HOME``, else
``./.stream``; :mod:`stream.localbroker.paths`). A ``.complete`` file holding the digest
of the inputs (requirements or sources, and the interpreter) is written only after a
build succeeded, so an interrupted build is redone and a changed input rebuilds. Builds
hold a file lock: two runs never build the same environment at once.

Each environment records the client versions it runs (``clients.json``): the table
and the JSON results name them per row.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from stream.localbroker.errors import PrerequisiteMissingError
from stream.localbroker.jars import find_java
from stream.localbroker.locking import exclusive_lock
from stream.localbroker.paths import resolve_home

PEERS_DIR: Final = Path(__file__).resolve().parent
KSTREAMS_PROJECT: Final = PEERS_DIR / "kstreams"
BUILD_TIMEOUT_S: Final = 1800.0
_TAIL_LINES: Final = 15

#: JVM options of the Kafka Streams row: a heap a deployment would give one instance,
#: and SLF4J's simple logger at WARN on stderr.
JVM_OPTIONS: Final = (
    "-Xms256m",
    "-Xmx1g",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.logFile=System.err",
)


@dataclass(frozen=True)
class PythonPeer:
    module: str
    venv: str
    #: Distributions whose versions the row reports (librdkafka is added when present).
    report: tuple[str, ...]

    @property
    def requirements(self) -> Path:
        return PEERS_DIR / f"requirements-{self.venv}.txt"


PYTHON_PEERS: Final = {
    "quix": PythonPeer(
        "benchmarks.peers.quix_pipeline", "quix", ("quixstreams", "confluent-kafka")
    ),
    "faust-per-event": PythonPeer(
        "benchmarks.peers.faust_per_event",
        "faust",
        ("faust-streaming", "aiokafka", "confluent-kafka"),
    ),
}
KSTREAMS: Final = "kstreams"
#: Bench-only tools in their own virtual environment, built like a Python peer's: the
#: latency plot (matplotlib stays out of the product's dependencies).
TOOLS: Final = {"plot": PythonPeer("benchmarks.latency_plot", "plot", ("matplotlib",))}


class PeerUnavailable(Exception):
    """A peer's environment cannot be had. ``missing``: a prerequisite (Java, Maven) is
    not installed, so the row is skipped; otherwise the build failed and the row fails."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class PeerEnv:
    """How to start one peer, and what it runs."""

    name: str
    #: The argv before the peer's own arguments.
    command: tuple[str, ...]
    #: Client (and framework) versions, e.g. ``{"confluent-kafka": "2.3.0", ...}``.
    clients: dict[str, str] = field(default_factory=dict)
    #: Seconds spent building the environment in this call; None if it was cached.
    built_seconds: float | None = None


def prepare(
    name: str, home: Path | None = None, say: Callable[[str], None] | None = None
) -> PeerEnv:
    """The environment of peer ``name``, built if needed; raises ``PeerUnavailable``."""
    if name == KSTREAMS:
        return kstreams_env(home, say)
    return python_env(name, home, say)


def product_clients() -> dict[str, str]:
    """What the product's rows (ceiling, stream) run: this environment's client."""
    from importlib import metadata

    import confluent_kafka

    return {
        # metadata: confluent_kafka.version() was a (str, int) tuple and is a str in 2.16
        "confluent-kafka": metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
    }


def clients_text(clients: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in clients.items())


# -- Python peers -----------------------------------------------------------------------------

_VERSIONS_SCRIPT: Final = """
import json, sys
from importlib import metadata
out = {}
for dist in sys.argv[1:]:
    try:
        out[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
try:
    import confluent_kafka
    out["librdkafka"] = confluent_kafka.libversion()[0]
except ImportError:
    pass
print(json.dumps(out))
"""


def venv_dir(venv: str, home: Path | None = None) -> Path:
    return resolve_home(home) / "peer-venvs" / venv


def python_env(
    name: str, home: Path | None = None, say: Callable[[str], None] | None = None
) -> PeerEnv:
    peer = PYTHON_PEERS[name] if name in PYTHON_PEERS else TOOLS[name]
    target = venv_dir(peer.venv, home)
    python = target / "bin" / "python"
    requirements = peer.requirements.read_text()
    digest = _digest(requirements.encode(), sys.version.encode(), sys.base_prefix.encode())
    built: float | None = None
    if not _complete(target, digest):
        with exclusive_lock(target.parent / f".{peer.venv}.lock"):
            if not _complete(target, digest):
                if say:
                    say(f"{name}: creating its virtual environment in {target} (once)")
                started = time.monotonic()
                shutil.rmtree(target, ignore_errors=True)
                _run([sys.executable, "-m", "venv", str(target)], f"{name}: python -m venv")
                _run(
                    [
                        *(str(python), "-m", "pip", "install", "-q"),
                        *("--disable-pip-version-check", "-r", str(peer.requirements)),
                    ],
                    f"{name}: pip install -r {peer.requirements.name}",
                )
                versions = _run(
                    [str(python), "-c", _VERSIONS_SCRIPT, *peer.report],
                    f"{name}: reading client versions",
                )
                (target / "clients.json").write_text(versions.strip() + "\n")
                (target / ".complete").write_text(digest + "\n")
                built = time.monotonic() - started
    clients = json.loads((target / "clients.json").read_text())
    return PeerEnv(name, (str(python), "-m", peer.module), clients, built)


# -- Kafka Streams ----------------------------------------------------------------------------


def kstreams_sources() -> list[Path]:
    """The Maven project's files: the pom and everything under src/."""
    return [
        KSTREAMS_PROJECT / "pom.xml",
        *sorted(p for p in (KSTREAMS_PROJECT / "src").rglob("*") if p.is_file()),
    ]


def kstreams_env(home: Path | None = None, say: Callable[[str], None] | None = None) -> PeerEnv:
    try:
        java = find_java()
    except PrerequisiteMissingError as exc:
        raise PeerUnavailable(f"Kafka Streams row skipped: {exc}", missing=True) from None
    sources = kstreams_sources()
    parts: list[bytes] = []
    for path in sources:
        parts += [str(path.relative_to(KSTREAMS_PROJECT)).encode(), path.read_bytes()]
    digest = _digest(*parts)
    build_dir = resolve_home(home) / "peers" / f"kstreams-{digest[:12]}"
    jar = build_dir / "target" / "kstreams-peer.jar"
    built: float | None = None
    if not _complete(build_dir, digest):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise PeerUnavailable(
                "Kafka Streams row skipped: `mvn` was not found on PATH (needed once, to "
                "build benchmarks/peers/kstreams); install it with `apt-get install maven`",
                missing=True,
            )
        with exclusive_lock(build_dir.parent / ".kstreams.lock"):
            if not _complete(build_dir, digest):
                if say:
                    say(f"kstreams: building benchmarks/peers/kstreams with Maven in {build_dir}")
                started = time.monotonic()
                shutil.rmtree(build_dir, ignore_errors=True)
                for path in sources:
                    copy = build_dir / path.relative_to(KSTREAMS_PROJECT)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, copy)
                _run(
                    [
                        mvn,
                        "-q",
                        "-B",
                        "-Dstyle.color=never",
                        "-f",
                        str(build_dir / "pom.xml"),
                        "package",
                    ],
                    "kstreams: mvn -q package",
                    cwd=build_dir,
                )
                if not jar.is_file():
                    raise PeerUnavailable(f"kstreams: Maven finished but {jar} is missing")
                clients = {
                    "kafka-streams": _jar_version(build_dir, "kafka-streams"),
                    "kafka-clients": _jar_version(build_dir, "kafka-clients"),
                }
                (build_dir / "clients.json").write_text(json.dumps(clients) + "\n")
                (build_dir / ".complete").write_text(digest + "\n")
                built = time.monotonic() - started
    clients = json.loads((build_dir / "clients.json").read_text())
    clients["java"] = _java_version(java)
    return PeerEnv(KSTREAMS, (str(java), *JVM_OPTIONS, "-jar", str(jar)), clients, built)


def _jar_version(build_dir: Path, artifact: str) -> str:
    for jar in (build_dir / "target" / "lib").glob(f"{artifact}-*.jar"):
        version = jar.stem[len(artifact) + 1 :]
        if version[:1].isdigit():
            return version
    return "unknown"


def _java_version(java: Path) -> str:
    try:
        probe = subprocess.run(
            [str(java), "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in probe.stderr.splitlines():
        if line.strip().startswith("java.version ="):
            return line.split("=", 1)[1].strip()
    return "unknown"


# -- helpers ----------------------------------------------------------------------------------


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _complete(directory: Path, digest: str) -> bool:
    try:
        return (directory / ".complete").read_text().strip() == digest
    except OSError:
        return False


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    """Run a build step; its stdout. A failure raises ``PeerUnavailable`` with the tail."""
    try:
        result = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"{what}: did not finish within {BUILD_TIMEOUT_S:.0f}s") from None
    except OSError as exc:
        raise PeerUnavailable(f"{what}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise PeerUnavailable(f"{what} failed (exit code {result.returncode}):\n{tail}")
    return result.stdout
