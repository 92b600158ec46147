"""Reference data for the generator's services (the ``reference.services`` topic).

Most services get a record; every tenth one (``svc-9``, ``svc-19``, ...) is left
out on purpose so the enrich stage's "unknown service" path carries real
traffic. The Zipf skew of the generator makes ``svc-9`` a busy source, not a
rare one. Pure: the producer writes these records, the peers read them from a
JSON file, and both agree because they come from this one function.
"""

from __future__ import annotations

from typing import Final

TEAMS: Final = ("payments", "identity", "search", "storage", "edge", "platform")
#: One service in ``UNKNOWN_EVERY`` has no reference record.
UNKNOWN_EVERY: Final = 10


def service_name(index: int) -> str:
    """Name of the generator's ``index``-th source (``svc-0`` is the busiest)."""
    return f"svc-{index}"


def is_known_service(index: int) -> bool:
    """Whether service ``index`` has a reference record."""
    return index % UNKNOWN_EVERY != UNKNOWN_EVERY - 1


def reference_data(n_services: int) -> dict[str, dict[str, str | int]]:
    """``{service: {"team", "tier", "owner"}}`` for the known services among ``n_services``."""
    data: dict[str, dict[str, str | int]] = {}
    for index in range(n_services):
        if not is_known_service(index):
            continue
        team = TEAMS[index % len(TEAMS)]
        data[service_name(index)] = {
            "team": team,
            "tier": 1 + index % 3,
            "owner": f"{team}-oncall-{index % 4}@example.com",
        }
    return data
