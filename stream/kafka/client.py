"""Shared confluent-kafka client settings.

librdkafka logs every failed connection attempt to stderr; with a broker down
that is a flood of identical lines. Routing its log through one Python logger
(``stream.librdkafka``) lets the CLI show one readable message instead.
"""

from __future__ import annotations

import logging
from typing import Any

LIBRDKAFKA_LOGGER = logging.getLogger("stream.librdkafka")


def client_config(base: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """A librdkafka config dict: the shared settings plus per-client overrides."""
    conf: dict[str, Any] = dict(base)
    conf.update(overrides)
    conf.setdefault("logger", LIBRDKAFKA_LOGGER)
    return conf
