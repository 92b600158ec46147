"""The Kafka JVM's command line.

Launching it detached, finding it again by its pid file and stopping it are
:mod:`stream.localjvm` (shared with the schema registry); what is Kafka's is here: the
server jars on the class path, log4j2's configuration and G1 with short pauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def java_command(
    java: Path,
    libs: Path,
    main_class: str,
    arguments: Sequence[str],
    *,
    heap: str,
    log4j_config: Path,
    logs_dir: Path,
    extra_options: Sequence[str] = (),
) -> list[str]:
    """``java`` command line running ``main_class`` from the jars in ``libs``."""
    return [
        str(java),
        f"-Xmx{heap}",
        *JVM_OPTIONS,
        *extra_options,
        f"-Dlog4j2.configurationFile={log4j_config}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        f"{libs}/*",  # expanded by the JVM itself
        main_class,
        *arguments,
    ]
