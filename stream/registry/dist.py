"""Apicurio Registry's distribution, fetched from Maven Central once and cached; Java 21+.

The registry is Apicurio Registry (Apache-2.0), whose Confluent-compatible API
(``/apis/ccompat/v7``) is what confluent-kafka's schema-registry client speaks. Its
Quarkus build is published on Maven Central as
``io.apicurio:apicurio-registry-app:<version>:tar.gz:all`` (~158 MB). Maven — already
needed for the Kafka broker's jars — copies it into ``<home>/apicurio-registry-<version>/``
and it is unpacked next to it; a marker file is written only after both steps succeeded,
so an interrupted download is retried. Maven's own ``~/.m2`` keeps the archive too, so a
``rm -r .stream`` does not download it again.

It needs Java 21+, which is often not the default ``java`` (the Kafka broker is happy
with 17): ``$STREAM_REGISTRY_JAVA_HOME``, ``$JAVA_HOME``, ``java`` on ``PATH`` and every
JDK under ``/usr/lib/jvm`` are tried in that order and the first 21+ wins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from stream.localbroker.jars import java_major_version
from stream.localbroker.locking import exclusive_lock
from stream.localbroker.paths import resolve_home
from stream.registry.errors import RegistryDownloadError, RegistryPrerequisiteError

REGISTRY_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{REGISTRY_VERSION}:tar.gz:all"
MIN_JAVA_MAJOR = 21
JAVA_HOME_ENV = "STREAM_REGISTRY_JAVA_HOME"
JVM_DIRS = (Path("/usr/lib/jvm"),)
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MAVEN_TIMEOUT_S = 1800.0
_TAIL_LINES = 15
_MARKER_TEXT = f"{ARTIFACT}\n"


def dist_dir(home: Path) -> Path:
    """Where the unpacked distribution (``quarkus-run.jar`` and ``lib/``) lives."""
    return home / f"apicurio-registry-{REGISTRY_VERSION}" / "app"


def find_java() -> Path:
    """A ``java`` executable of version 21 or later, or one clear error naming what was tried."""
    tried: list[str] = []
    for candidate in _java_candidates():
        major = _probe_major(candidate)
        tried.append(f"{candidate} ({'unknown version' if major is None else f'Java {major}'})")
        if major is not None and major >= MIN_JAVA_MAJOR:
            return candidate
    found = "; ".join(tried) if tried else "no java executable at all"
    raise RegistryPrerequisiteError(
        f"the local schema registry (Apicurio Registry {REGISTRY_VERSION}) needs Java "
        f"{MIN_JAVA_MAJOR}+, found: {found}. Install one (e.g. `apt-get install "
        f"openjdk-21-jre-headless`) or point {JAVA_HOME_ENV} at a JDK 21+ — or set "
        f"STREAM_SCHEMA_REGISTRY_URL to use an existing registry"
    )


def _java_candidates() -> list[Path]:
    seen: set[Path] = set()
    ordered: list[Path] = []

    def add(path: Path | None) -> None:
        if path is not None and path not in seen and os.access(path, os.X_OK):
            seen.add(path)
            ordered.append(path)

    for variable in (JAVA_HOME_ENV, "JAVA_HOME"):
        value = os.environ.get(variable)
        add(Path(value, "bin", "java") if value else None)
    on_path = shutil.which("java")
    add(Path(on_path) if on_path else None)
    for root in JVM_DIRS:
        if root.is_dir():
            # Newest-looking first: "temurin-25-jdk" before "java-17-openjdk".
            for jdk in sorted(root.iterdir(), key=lambda p: _name_version(p.name), reverse=True):
                add(jdk / "bin" / "java")
    return ordered


def _name_version(name: str) -> int:
    digits = [
        int(part) for part in name.replace("_", "-").replace(".", "-").split("-") if part.isdigit()
    ]
    return max((d for d in digits if d >= 8), default=0)


def _probe_major(java: Path) -> int | None:
    try:
        probe = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return java_major_version(probe.stderr + probe.stdout)


def ensure_distribution(home: Path | str | None = None) -> Path:
    """Return the unpacked distribution directory, fetching it with Maven if not cached yet."""
    app = dist_dir(resolve_home(home))
    cache = app.parent
    marker = cache / ".complete"
    if _marker_ok(marker, app):
        return app
    with exclusive_lock(cache / ".lock"):
        if _marker_ok(marker, app):  # another process fetched while we waited
            return app
        archive = _fetch_with_maven(cache)
        _unpack(archive, app)
        archive.unlink(missing_ok=True)  # ~/.m2 keeps a copy; no need for two
        marker.write_text(_MARKER_TEXT, encoding="utf-8")
    return app


def _marker_ok(marker: Path, app: Path) -> bool:
    try:
        text = marker.read_text(encoding="utf-8")
    except OSError:
        return False
    return text == _MARKER_TEXT and (app / "quarkus-run.jar").is_file()


def _fetch_with_maven(cache: Path) -> Path:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RegistryPrerequisiteError(
            "`mvn` was not found on PATH (needed once, to fetch Apicurio Registry "
            f"{REGISTRY_VERSION} from Maven Central): `apt-get install maven`, or set "
            "STREAM_SCHEMA_REGISTRY_URL to use an existing registry"
        )
    staging = cache / "download.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        f"{_DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={ARTIFACT}",
        f"-DoutputDirectory={staging}",
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
        raise RegistryDownloadError(
            f"Maven did not finish fetching {ARTIFACT} within {_MAVEN_TIMEOUT_S:.0f}s"
        ) from exc
    archives = sorted(staging.glob("*.tar.gz"))
    if result.returncode != 0 or not archives:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise RegistryDownloadError(
            f"Maven could not fetch {ARTIFACT} (exit code {result.returncode}); "
            f"last lines of its output:\n{tail}"
        )
    return archives[0]


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
