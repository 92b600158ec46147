""" "Is the registry up?" answered the way a client sees it: ``GET <url>/subjects`` returns 200.

An open port is not enough — Quarkus opens its listener before the storage is
initialised — so readiness means the Confluent-compatible API answered a real request.
The same probe serves ``status`` for a registry named by ``STREAM_SCHEMA_REGISTRY_URL``.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from stream.registry.errors import RegistryStartError

_POLL_INTERVAL_S = 0.2


def probe(url: str, timeout: float = 2.0, basic_auth: str | None = None) -> str | None:
    """``None`` if ``GET <url>/subjects`` answers 200, else a short reason it did not."""
    request = urllib.request.Request(url.rstrip("/") + "/subjects")
    if basic_auth:
        token = base64.b64encode(basic_auth.encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason)


def wait_until_ready(url: str, timeout: float, is_alive: Callable[[], bool] | None = None) -> None:
    """Return once ``url`` answers; :class:`RegistryStartError` after ``timeout`` s or if
    ``is_alive`` says the process is gone."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if is_alive is not None and not is_alive():
            raise RegistryStartError(f"the schema registry for {url} exited while starting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RegistryStartError(
                f"the schema registry at {url} did not answer within {timeout:g}s ({last})"
            )
        reason = probe(url, timeout=min(remaining, 2.0))
        if reason is None:
            return
        last = reason
        time.sleep(_POLL_INTERVAL_S)
