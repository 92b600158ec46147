"""The Kafka server's jars, fetched from Maven Central once and cached.

The broker is the real Apache Kafka server (``org.apache.kafka:kafka_2.13``), not an
imitation: transactions, group rebalancing and compaction are what our tests must
prove. It runs on Java 17+; Maven resolves its ~45 runtime jars from
``pom.xml`` next to this module into ``<home>/kafka-<version>/libs``. A marker
file holding the pom's digest is written only after Maven succeeded, so an
interrupted download is retried and a changed pom fetches again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from stream.localbroker.errors import PrerequisiteMissingError, ServerJarsError
from stream.localbroker.locking import exclusive_lock
from stream.localbroker.paths import jar_cache_dir, resolve_home

KAFKA_VERSION = "4.3.1"
MIN_JAVA_MAJOR = 17
INSTALL_HINT = (
    "install them with `apt-get install openjdk-17-jre-headless maven` "
    "(or set STREAM_BOOTSTRAP_SERVERS to use an existing Kafka cluster)"
)
_MAVEN_TIMEOUT_S = 1800.0
_MAVEN_TAIL_LINES = 15
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def _missing(what: str) -> PrerequisiteMissingError:
    return PrerequisiteMissingError(
        f"the local Kafka broker needs Java {MIN_JAVA_MAJOR}+ and Maven: {what}; {INSTALL_HINT}"
    )


def find_java() -> Path:
    """The ``java`` executable (``$JAVA_HOME/bin/java`` first, then ``PATH``), checked to be 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    if candidate is None or not os.access(candidate, os.X_OK):
        found = shutil.which("java")
        if found is None:
            raise _missing("`java` was not found on PATH")
        candidate = Path(found)
    try:
        probe = subprocess.run(
            [str(candidate), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _missing(f"`{candidate} -version` failed ({exc})") from exc
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA_MAJOR:
        shown = "an unknown version" if major is None else f"Java {major}"
        raise _missing(f"`{candidate}` is {shown}")
    return candidate


def java_major_version(version_output: str) -> int | None:
    """Major version from ``java -version`` output (``"1.8.0_x"`` is 8, ``"17.0.15"`` is 17)."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def pom_text() -> str:
    return resources.files("stream.localbroker").joinpath("pom.xml").read_text(encoding="utf-8")


def ensure_server_jars(home: Path | str | None = None) -> Path:
    """Return the directory of Kafka server jars, fetching them with Maven if not cached yet.

    Java is checked every time (the jars are useless without it); Maven only when
    a download is needed.
    """
    find_java()
    libs = jar_cache_dir(resolve_home(home), KAFKA_VERSION)
    cache = libs.parent
    pom = pom_text()
    digest = hashlib.sha256(pom.encode()).hexdigest()
    marker = cache / ".complete"
    if _marker_matches(marker, digest):
        return libs
    with exclusive_lock(cache / ".lock"):
        if _marker_matches(marker, digest):  # another process fetched while we waited
            return libs
        _fetch_with_maven(cache, libs, pom)
        marker.write_text(digest + "\n", encoding="utf-8")
    return libs


def _marker_matches(marker: Path, digest: str) -> bool:
    try:
        return marker.read_text(encoding="utf-8").strip() == digest
    except OSError:
        return False


def _fetch_with_maven(cache: Path, libs: Path, pom: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise _missing("`mvn` was not found on PATH (needed once, to fetch the Kafka server jars)")
    pom_file = cache / "pom.xml"
    pom_file.write_text(pom, encoding="utf-8")
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom_file),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    try:
        result = subprocess.run(
            command,
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerJarsError(
            f"Maven did not finish fetching the Kafka {KAFKA_VERSION} server jars "
            f"within {_MAVEN_TIMEOUT_S:.0f}s"
        ) from exc
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_MAVEN_TAIL_LINES:])
        raise ServerJarsError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} server jars "
            f"(exit code {result.returncode}); last lines of its output:\n{tail}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
