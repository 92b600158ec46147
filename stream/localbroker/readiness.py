""" "Is the broker up?" answered the way a client sees it: a metadata request.

An open port is not enough (the listener opens before the broker is fully
ready on some paths, and a SASL listener may refuse us), so readiness means a
confluent-kafka ``AdminClient.list_topics`` answered. The TCP check in front of it
keeps librdkafka from spamming connection-refused logs while the JVM boots. The
waiting around the probe is :func:`stream.localjvm.readiness.wait_until_ready`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from stream.localbroker.errors import BrokerStartError
from stream.localjvm.ports import port_accepts
from stream.localjvm.readiness import wait_until_ready as poll_until_ready


def _silent_logger() -> logging.Logger:
    """librdkafka logs through this logger; connection errors while probing are expected."""
    logger = logging.getLogger("stream.localbroker.probe")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _host_port(bootstrap: str) -> tuple[str, int] | None:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _admin(bootstrap: str, client_config: Mapping[str, str] | None, errors: list[Any]) -> Any:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "reconnect.backoff.max.ms": 500,
        "logger": _silent_logger(),
        "error_cb": errors.append,
        **(client_config or {}),
    }
    return AdminClient(config)


def wait_until_ready(
    bootstrap: str,
    timeout: float,
    client_config: Mapping[str, str] | None = None,
    is_alive: Callable[[], bool] | None = None,
) -> None:
    """Return once ``bootstrap`` answers a metadata request.

    Raises :class:`BrokerStartError` when ``timeout`` seconds pass, when ``is_alive``
    says the broker process is gone, or when the broker rejects our credentials.
    """
    from confluent_kafka import KafkaError, KafkaException

    address = _host_port(bootstrap)
    admin: Any = None
    client_errors: list[Any] = []  # filled by librdkafka's error callback on poll()

    def probe(seconds: float) -> str | None:
        nonlocal admin
        if address is not None and not port_accepts(address[1], address[0]):
            return "port closed"
        admin = admin if admin is not None else _admin(bootstrap, client_config, client_errors)
        try:
            admin.list_topics(timeout=seconds)
            return None
        except KafkaException as exc:
            admin.poll(0)
            first = exc.args[0] if exc.args else exc
            reason = first.str() if isinstance(first, KafkaError) else str(first)
        for error in client_errors:
            if error.code() == KafkaError._AUTHENTICATION:
                raise BrokerStartError(
                    f"the Kafka broker at {bootstrap} rejected our credentials: {error.str()}"
                )
        client_errors.clear()
        return reason

    poll_until_ready(
        probe,
        timeout,
        what="the Kafka broker",
        where=bootstrap,
        error=BrokerStartError,
        is_alive=is_alive,
    )
