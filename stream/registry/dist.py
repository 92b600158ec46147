"""Apicurio Registry's distribution, fetched from Maven Central once and cached; Java 21+.

The registry is Apicurio Registry (Apache-2.0), whose Confluent-compatible API
(``/apis/ccompat/v7``) is what confluent-kafka's schema-registry client speaks. Its
Quarkus build is published on Maven Central as
``io.apicurio:apicurio-registry-app:<version>:tar.gz:all`` (~158 MB). Maven — already
needed for the Kafka broker's jars — copies it into ``<home>/apicurio-registry-<version>/``
and it is unpacked next to it; the cache is marked complete only after both steps
succeeded (:func:`stream.localjvm.maven.ensure_cached`), so an interrupted download is
retried. Maven's own ``~/.m2`` keeps the archive too, so a
``rm -r .stream`` does not download it again.

It needs Java 21+, which is often not the default ``java`` (the Kafka broker is happy
with 17): ``$STREAM_REGISTRY_JAVA_HOME``, ``$JAVA_HOME``, ``java`` on ``PATH`` and every
JDK under ``/usr/lib/jvm`` are tried in that order and the first 21+ wins
(:mod:`stream.localjvm.java`).
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from stream.localjvm.home import resolve_home
from stream.localjvm.java import find_java as search_java
from stream.localjvm.java import java_candidates
from stream.localjvm.maven import ensure_cached, run_maven
from stream.registry.errors import RegistryDownloadError, RegistryPrerequisiteError

REGISTRY_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{REGISTRY_VERSION}:tar.gz:all"
MIN_JAVA_MAJOR = 21
JAVA_HOME_ENV = "STREAM_REGISTRY_JAVA_HOME"
JVM_DIRS = (Path("/usr/lib/jvm"),)
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def dist_dir(home: Path) -> Path:
    """Where the unpacked distribution (``quarkus-run.jar`` and ``lib/``) lives."""
    return home / f"apicurio-registry-{REGISTRY_VERSION}" / "app"


def find_java() -> Path:
    """A ``java`` executable of version 21 or later, or one clear error naming what was tried."""
    search = search_java(MIN_JAVA_MAJOR, java_candidates((JAVA_HOME_ENV, "JAVA_HOME"), JVM_DIRS))
    if search.found is not None:
        return search.found
    raise RegistryPrerequisiteError(
        f"the local schema registry (Apicurio Registry {REGISTRY_VERSION}) needs Java "
        f"{MIN_JAVA_MAJOR}+, found: {search.describe()}. Install one (e.g. `apt-get install "
        f"openjdk-21-jre-headless`) or point {JAVA_HOME_ENV} at a JDK 21+ — or set "
        f"STREAM_SCHEMA_REGISTRY_URL to use an existing registry"
    )


def ensure_distribution(home: Path | str | None = None) -> Path:
    """Return the unpacked distribution directory, fetching it with Maven if not cached yet."""
    app = dist_dir(resolve_home(home))
    ensure_cached(
        app.parent,
        ARTIFACT,
        lambda: _fetch_and_unpack(app),
        present=lambda: (app / "quarkus-run.jar").is_file(),
    )
    return app


def _fetch_and_unpack(app: Path) -> None:
    cache = app.parent
    staging = cache / "download.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run_maven(
        [f"{_DEPENDENCY_PLUGIN}:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={staging}"],
        cwd=cache,
        what=ARTIFACT,
        produced=lambda: any(staging.glob("*.tar.gz")),
        error=RegistryDownloadError,
        missing=lambda: RegistryPrerequisiteError(
            "`mvn` was not found on PATH (needed once, to fetch Apicurio Registry "
            f"{REGISTRY_VERSION} from Maven Central): `apt-get install maven`, or set "
            "STREAM_SCHEMA_REGISTRY_URL to use an existing registry"
        ),
    )
    archive = sorted(staging.glob("*.tar.gz"))[0]
    _unpack(archive, app)
    archive.unlink(missing_ok=True)  # ~/.m2 keeps a copy; no need for two


def _unpack(archive: Path, app: Path) -> None:
    staging = app.with_name(app.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise RegistryDownloadError(f"could not unpack {archive}: {exc}") from exc
    if not (staging / "quarkus-run.jar").is_file():
        raise RegistryDownloadError(f"{archive} holds no quarkus-run.jar at its top level")
    shutil.rmtree(app, ignore_errors=True)
    staging.rename(app)
    shutil.rmtree(archive.parent, ignore_errors=True)
