"""Finding a ``java`` of at least a given major version, and saying what was found if none is.

The Kafka broker runs on Java 17+, Apicurio Registry on 21+, and the default ``java``
is often the older one: a search goes through environment variables naming a JDK
(``$STREAM_REGISTRY_JAVA_HOME``, ``$JAVA_HOME``, ...), then ``java`` on ``PATH``, then
every JDK under the given directories (newest-looking first), and the first that is new
enough wins. What it tried is kept so that the caller's error can name it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class JavaSearch:
    """The outcome of :func:`find_java`: ``found`` (or ``None``) and every ``(java, major)``
    probed on the way (``major`` is ``None`` where ``java -version`` gave no version)."""

    found: Path | None
    tried: tuple[tuple[Path, int | None], ...]

    def describe(self) -> str:
        """``"/usr/bin/java (Java 17); ..."``, or ``"no java executable at all"``."""
        shown = [f"{java} ({_version_text(major)})" for java, major in self.tried]
        return "; ".join(shown) if shown else "no java executable at all"


def _version_text(major: int | None) -> str:
    return "unknown version" if major is None else f"Java {major}"


def java_major_version(version_output: str) -> int | None:
    """Major version from ``java -version`` output (``"1.8.0_x"`` is 8, ``"17.0.15"`` is 17)."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def probe_major(java: Path) -> int | None:
    """Major version of ``java`` by running ``java -version``; ``None`` if that fails."""
    try:
        probe = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return java_major_version(probe.stderr + probe.stdout)


def java_candidates(home_vars: Sequence[str], jvm_dirs: Iterable[Path] = ()) -> list[Path]:
    """Executable ``java`` files in search order, each once: ``$VAR/bin/java`` for each of
    ``home_vars``, ``java`` on ``PATH``, then the JDKs under ``jvm_dirs``."""
    seen: set[Path] = set()
    ordered: list[Path] = []

    def add(path: Path | None) -> None:
        if path is not None and path not in seen and os.access(path, os.X_OK):
            seen.add(path)
            ordered.append(path)

    for variable in home_vars:
        value = os.environ.get(variable)
        add(Path(value, "bin", "java") if value else None)
    on_path = shutil.which("java")
    add(Path(on_path) if on_path else None)
    for root in jvm_dirs:
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


def find_java(min_major: int, candidates: Iterable[Path]) -> JavaSearch:
    """The first of ``candidates`` whose version is ``min_major`` or later (probed in order)."""
    tried: list[tuple[Path, int | None]] = []
    for candidate in candidates:
        major = probe_major(candidate)
        tried.append((candidate, major))
        if major is not None and major >= min_major:
            return JavaSearch(candidate, tuple(tried))
    return JavaSearch(None, tuple(tried))
