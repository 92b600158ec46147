"""Fetching a service's artifacts with Maven once, into a cache marked complete only on success.

Maven (with Maven Central) is on every machine the project runs its own broker and
registry on; it resolves and verifies artifacts (checksums) and keeps them in ``~/.m2``, so
a deleted ``.stream`` costs no second download. A cache directory holds a ``.complete``
marker whose text (a pom's digest, an artifact's coordinates) is written only after the
fetch succeeded: an interrupted fetch is retried, a changed stamp fetches again, and the
inter-process lock keeps two starts from fetching at once.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from stream.localjvm.locking import exclusive_lock

MAVEN_TIMEOUT_S = 1800.0
_TAIL_LINES = 15


def ensure_cached(
    cache: Path,
    stamp: str,
    fetch: Callable[[], None],
    present: Callable[[], bool] = lambda: True,
) -> None:
    """Run ``fetch`` unless ``cache`` is marked complete with ``stamp`` (and ``present()``)."""
    marker = cache / ".complete"
    if _complete(marker, stamp, present):
        return
    with exclusive_lock(cache / ".lock"):
        if _complete(marker, stamp, present):  # another process fetched while we waited
            return
        fetch()
        marker.write_text(stamp + "\n", encoding="utf-8")


def _complete(marker: Path, stamp: str, present: Callable[[], bool]) -> bool:
    try:
        text = marker.read_text(encoding="utf-8")
    except OSError:
        return False
    return text.strip() == stamp and present()


def run_maven(
    arguments: Sequence[str],
    *,
    cwd: Path,
    what: str,
    produced: Callable[[], bool],
    error: type[Exception],
    missing: Callable[[], Exception],
) -> None:
    """``mvn -q -B ARGUMENTS`` in ``cwd``; ``error`` unless it succeeds and ``produced()``.

    ``what`` names the download in messages ("the Kafka 4.3.1 server jars"); ``missing()``
    is the error to raise when ``mvn`` is not on ``PATH``. A failure shows Maven's last lines.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise missing()
    command = [mvn, "-q", "-B", "-Dstyle.color=never", *arguments]
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"Maven did not finish fetching {what} within {MAVEN_TIMEOUT_S:.0f}s") from exc
    if result.returncode != 0 or not produced():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise error(
            f"Maven could not fetch {what} (exit code {result.returncode}); "
            f"last lines of its output:\n{tail}"
        )
