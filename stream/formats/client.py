"""The schema-registry client the codecs share, and how its failures map onto ours.

confluent-kafka's :class:`SchemaRegistryClient` caches schemas by id for the life of the
process (a writer schema is fetched once per id) and is used unchanged, with two
additions made by subclassing:

* **latest version, stale-if-error**: the "latest version of the subject" (Avro's reader
  schema) is re-read every :data:`LATEST_TTL_S` seconds so a new version is picked up;
  if the registry is unreachable at that moment the last answer is kept rather than
  stopping a pipeline whose records all decode with cached schemas.
* nothing else: timeouts are short (:data:`REQUEST_TIMEOUT_S`) and retries few, because
  the caller owns retrying (it pauses the batch on :class:`TransientError`).

Failure mapping (:func:`registry_failure`): connection errors, timeouts, HTTP 5xx, 408 and
429 are transient; 401/403 are a configuration error (wrong credentials fail every record
alike, so they must not fill the DLQ); everything else is the record's own problem.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

import httpx
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from stream.errors import ConfigError, StreamError, TransientError

REQUEST_TIMEOUT_S: Final = 10.0
LATEST_TTL_S: Final = 30.0
SCHEMA_NOT_FOUND: Final = 40403
SUBJECT_NOT_FOUND: Final = 40401
VERSION_NOT_FOUND: Final = 40402
_TRANSIENT_STATUS: Final = frozenset({408, 429})


class RegistryClient(SchemaRegistryClient):  # type: ignore[misc,unused-ignore]  # untyped < 2.13
    """:class:`SchemaRegistryClient` whose latest-version lookups survive registry outages."""

    def __init__(self, conf: dict[str, Any], latest_ttl: float = LATEST_TTL_S) -> None:
        super().__init__(conf)
        self.latest_ttl = latest_ttl
        self._known_latest: dict[tuple[str, str | None], tuple[float, Any]] = {}
        self._latest_lock = threading.Lock()

    def get_latest_version(self, subject_name: str, fmt: str | None = None) -> Any:
        key = (subject_name, fmt)
        now = time.monotonic()
        with self._latest_lock:
            known = self._known_latest.get(key)
        if known is not None and now - known[0] < self.latest_ttl:
            return known[1]
        try:
            library_cache = getattr(self, "_latest_version_cache", None)
            if library_cache is not None:
                library_cache.pop(subject_name, None)  # we own the TTL
            latest = super().get_latest_version(subject_name, fmt)
        except (httpx.TransportError, SchemaRegistryError) as exc:
            if known is not None and is_transient(exc):
                return known[1]  # stale but usable; retried after the next TTL
            raise
        with self._latest_lock:
            self._known_latest[key] = (now, latest)
        return latest


def make_client(
    url: str, basic_auth: str | None = None, *, latest_ttl: float = LATEST_TTL_S
) -> RegistryClient:
    """A client for the registry at ``url`` (``user:password`` basic auth if given);
    ``latest_ttl``: seconds a subject's latest version is reused before it is re-read."""
    conf: dict[str, Any] = {
        "url": url,
        "timeout": REQUEST_TIMEOUT_S,
        "max.retries": 1,
        "retries.wait.ms": 100,
        "retries.max.wait.ms": 500,
    }
    if basic_auth:
        if ":" not in basic_auth:
            raise ConfigError("schema_registry.basic_auth", "must be USER:PASSWORD")
        conf["basic.auth.user.info"] = basic_auth
    try:
        return RegistryClient(conf, latest_ttl)
    except (ValueError, TypeError) as exc:
        raise ConfigError("schema_registry.url", str(exc)) from exc


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        return isinstance(status, int) and (status >= 500 or status in _TRANSIENT_STATUS)
    return False


def registry_failure(exc: BaseException, url: str) -> StreamError | None:
    """The error to raise instead of ``exc`` (transient or configuration), or ``None`` when
    ``exc`` is about one record and should become a reject."""
    if is_transient(exc):
        return TransientError(f"schema registry at {url} is unavailable: {describe(exc)}")
    if isinstance(exc, SchemaRegistryError) and exc.http_status_code in (401, 403):
        return ConfigError(
            "schema_registry.basic_auth",
            f"the registry at {url} refused our credentials: {describe(exc)}",
        )
    return None


def is_not_found(exc: BaseException, *codes: int) -> bool:
    if not isinstance(exc, SchemaRegistryError) or exc.http_status_code != 404:
        return False
    return not codes or exc.error_code in codes


def describe(exc: BaseException) -> str:
    """A one-line description: the registry's own message where there is one."""
    if isinstance(exc, SchemaRegistryError):
        return str(exc.error_message)
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, StreamError) else f"{type(exc).__name__}: {text}"
