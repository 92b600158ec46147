""" "Is the registry up?" answered the way a client sees it: ``GET <url>/subjects`` returns 200.

An open port is not enough — Quarkus opens its listener before the storage is
initialised — so readiness means the Confluent-compatible API answered a real request.
The same probe serves ``status`` for a registry named by ``STREAM_SCHEMA_REGISTRY_URL``;
the waiting around it is :func:`stream.localjvm.readiness.wait_until_ready`.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Callable

from stream.localjvm.readiness import wait_until_ready as poll_until_ready
from stream.registry.errors import RegistryStartError


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
    poll_until_ready(
        lambda seconds: probe(url, timeout=seconds),
        timeout,
        what="the schema registry",
        where=url,
        error=RegistryStartError,
        is_alive=is_alive,
    )
