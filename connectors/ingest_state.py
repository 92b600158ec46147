"""How far ``stream ingest`` got with each file, so an interrupted run resumes without duplicates.

One small JSON file per (input file, target topic, cluster) under
``$STREAM_HOME/ingest-state/``. It is rewritten (write to a temporary file,
fsync, rename) only *after* the producer has acknowledged every row before
the recorded position, so the position never runs ahead of Kafka: a rerun
skips exactly the rows that are already there. Rows produced after the last
checkpoint of a run that was killed hard (SIGKILL, power loss) are sent again
(at least once); a run stopped by Ctrl-C or SIGTERM checkpoints on the way
out and leaves nothing to resend.

The file is identified by a fingerprint of its first 64 KiB (all of it if it
was smaller when first seen): a file that was appended to resumes where it
stopped; a file whose beginning changed is a different file, and the run
refuses to guess (``--restart`` starts it over).
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from connectors.base import Position
from stream.errors import ConfigError

STATE_DIR_NAME: Final = "ingest-state"
FINGERPRINT_BYTES: Final = 64 * 1024


class FileProgress(msgspec.Struct, omit_defaults=True):
    """The recorded progress of one file into one topic."""

    file: str
    topic: str
    bootstrap: str
    fingerprint: str
    #: How many leading bytes ``fingerprint`` covers (64 KiB, or the whole file if smaller).
    fingerprint_bytes: int = 0
    offset: int = 0
    line: int = 0
    record: int = 0
    accepted: int = 0
    rejected: int = 0
    done: bool = False
    updated_at: str = ""

    @property
    def position(self) -> Position:
        return Position(self.offset, self.line, self.record)


_decoder: Final = msgspec.json.Decoder(FileProgress)


def fingerprint(path: Path, length: int = FINGERPRINT_BYTES) -> tuple[str, int]:
    """SHA-256 of the first ``length`` bytes (fewer if the file is shorter), and how many.

    Stable while a file is only appended to, as long as the same length is hashed.
    """
    with path.open("rb") as file:
        head = file.read(length)
    return hashlib.sha256(head).hexdigest(), len(head)


def default_state_dir() -> Path:
    """``$STREAM_HOME/ingest-state`` (``STREAM_HOME`` defaults to ``./.stream``)."""
    home = os.environ.get("STREAM_HOME") or ".stream"
    return Path(home).expanduser().resolve() / STATE_DIR_NAME


class StateStore:
    """Loads and atomically saves :class:`FileProgress` records in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, file: Path, topic: str, bootstrap: str) -> Path:
        key = "\0".join((str(file.resolve()), topic, bootstrap))
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.directory / f"{file.name}.{digest}.json"

    def start(self, file: Path, topic: str, bootstrap: str, *, restart: bool) -> FileProgress:
        """The progress to resume from (fresh when there is none, or with ``restart``)."""
        digest, length = fingerprint(file)
        fresh = FileProgress(str(file.resolve()), topic, bootstrap, digest, length)
        if restart:
            return fresh
        saved = self.load(file, topic, bootstrap)
        if saved is None:
            return fresh
        same_start = fingerprint(file, saved.fingerprint_bytes) == (
            saved.fingerprint,
            saved.fingerprint_bytes,
        )
        if not same_start or file.stat().st_size < saved.offset:
            raise ConfigError(
                "FILE",
                f"{file} changed since an earlier run ingested {saved.record:,} rows of it into "
                f"{topic}; pass --restart to ingest it again from the beginning",
            )
        return saved

    def load(self, file: Path, topic: str, bootstrap: str) -> FileProgress | None:
        path = self.path_for(file, topic, bootstrap)
        try:
            return _decoder.decode(path.read_bytes())
        except FileNotFoundError:
            return None
        except msgspec.DecodeError:
            raise ConfigError(
                "--state-dir", f"{path} is not a valid ingest state file; delete it to start over"
            ) from None

    def save(self, progress: FileProgress) -> None:
        """Write ``progress`` durably: temporary file, fsync, rename."""
        progress.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path_for(Path(progress.file), progress.topic, progress.bootstrap)
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("wb") as out:
            out.write(msgspec.json.encode(progress))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
