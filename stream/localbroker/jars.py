"""The Kafka server's jars, fetched from Maven Central once and cached.

The broker is the real Apache Kafka server (``org.apache.kafka:kafka_2.13``), not an
imitation: transactions, group rebalancing and compaction are what our tests must
prove. It runs on Java 17+; Maven resolves its ~45 runtime jars from
``pom.xml`` next to this module into ``<home>/kafka-<version>/libs``. The cache is
marked complete with the pom's digest only after Maven succeeded
(:func:`stream.localjvm.maven.ensure_cached`), so an interrupted download is retried
and a changed pom fetches again.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources
from pathlib import Path

from stream.localbroker.errors import PrerequisiteMissingError, ServerJarsError
from stream.localbroker.paths import jar_cache_dir, resolve_home
from stream.localjvm.java import find_java as search_java
from stream.localjvm.java import java_candidates, java_major_version
from stream.localjvm.maven import ensure_cached, run_maven

__all__ = [
    "INSTALL_HINT",
    "KAFKA_VERSION",
    "MIN_JAVA_MAJOR",
    "ensure_server_jars",
    "find_java",
    "java_major_version",
    "pom_text",
]

KAFKA_VERSION = "4.3.1"
MIN_JAVA_MAJOR = 17
INSTALL_HINT = (
    "install them with `apt-get install openjdk-17-jre-headless maven` "
    "(or set STREAM_BOOTSTRAP_SERVERS to use an existing Kafka cluster)"
)


def _missing(what: str) -> PrerequisiteMissingError:
    return PrerequisiteMissingError(
        f"the local Kafka broker needs Java {MIN_JAVA_MAJOR}+ and Maven: {what}; {INSTALL_HINT}"
    )


def find_java() -> Path:
    """The ``java`` executable (``$JAVA_HOME/bin/java`` first, then ``PATH``), checked to be 17+."""
    search = search_java(MIN_JAVA_MAJOR, java_candidates(("JAVA_HOME",)))
    if search.found is not None:
        return search.found
    if not search.tried:
        raise _missing("`java` was not found on PATH")
    java, major = search.tried[0]
    shown = "an unknown version" if major is None else f"Java {major}"
    raise _missing(f"`{java}` is {shown}")


def pom_text() -> str:
    return resources.files("stream.localbroker").joinpath("pom.xml").read_text(encoding="utf-8")


def ensure_server_jars(home: Path | str | None = None) -> Path:
    """Return the directory of Kafka server jars, fetching them with Maven if not cached yet.

    Java is checked every time (the jars are useless without it); Maven only when
    a download is needed.
    """
    find_java()
    libs = jar_cache_dir(resolve_home(home), KAFKA_VERSION)
    pom = pom_text()
    digest = hashlib.sha256(pom.encode()).hexdigest()
    ensure_cached(libs.parent, digest, lambda: _fetch_with_maven(libs.parent, libs, pom))
    return libs


def _fetch_with_maven(cache: Path, libs: Path, pom: str) -> None:
    pom_file = cache / "pom.xml"
    pom_file.write_text(pom, encoding="utf-8")
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    run_maven(
        [
            "-f",
            str(pom_file),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        cwd=cache,
        what=f"the Kafka {KAFKA_VERSION} server jars",
        produced=lambda: any(staging.glob("kafka_2.13-*.jar")),
        error=ServerJarsError,
        missing=lambda: _missing(
            "`mvn` was not found on PATH (needed once, to fetch the Kafka server jars)"
        ),
    )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
