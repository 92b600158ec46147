"""Enrich stage: attach service reference data and a score to every valid event.

Why it is cheap: everything the stage adds depends only on (source, severity),
so the JSON fragment for that pair is built once and cached; per event the
stage does one dict lookup and one byte splice onto the validated input bytes
(``models.splice_enriched``) — no re-encoding. Inputs that already carry the
output's reserved keys are re-encoded from the decoded event instead.
Reference data is fetched per *batch*, for the sources the cache has not seen,
through a :class:`ReferenceLookup` — an in-memory table fed by the compacted
``reference.services`` topic, or an external store (PostgreSQL). External
lookups sit behind a circuit breaker: while it is open (or a lookup fails),
events pass through marked ``degraded`` instead of blocking the partition.
Unknown services pass through marked ``known_service: false``, never dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple, Protocol

from stream.errors import TransientError
from stream.models import (
    RESERVED_OUTPUT_KEYS,
    SEVERITY_RANK,
    SPLICE_FORMAT,
    Enrichment,
    Event,
    ServiceInfo,
    encode_enriched,
    encoder,
    splice_enriched,
)


class ReferenceLookup(Protocol):
    """Where service reference data comes from."""

    @property
    def version(self) -> int:
        """Changes whenever the data may have changed; the stage then drops its cache."""
        ...

    def lookup(self, sources: Collection[str]) -> Mapping[str, ServiceInfo]:
        """Reference data for ``sources``; absent keys are unknown services.

        May raise :class:`stream.errors.TransientError` when the store is unavailable.
        """
        ...


class Breaker(Protocol):
    """The part of ``stream.resilience.circuit_breaker.CircuitBreaker`` the stage uses."""

    def allow(self) -> bool: ...
    def record_success(self) -> None: ...
    def record_failure(self, exc: BaseException) -> None: ...


class EnrichResult(NamedTuple):
    """Encoded output values, one per input event, plus counts for metrics."""

    values: list[bytes]
    unknown: int
    degraded: int


class Enricher:
    """Turns validated events into encoded ``events.enriched`` record values."""

    def __init__(
        self,
        lookup: ReferenceLookup,
        *,
        tier_weights: Mapping[int, float] | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self._lookup = lookup
        self._weights = dict(tier_weights or {1: 3.0, 2: 2.0, 3: 1.0})
        self._breaker = breaker
        self._cache: dict[tuple[str, str], bytes] = {}
        self._unknown_sources: set[str] = set()
        self._cache_version = lookup.version

    def enrich(
        self, events: Sequence[Event], event_times: Sequence[int], raws: Sequence[bytes]
    ) -> EnrichResult:
        """Encode every event as an ``events.enriched`` value.

        ``raws[i]`` is the validated record value that ``events[i]`` was decoded from.
        """
        if self._lookup.version != self._cache_version:
            self._cache.clear()
            self._unknown_sources.clear()
            self._cache_version = self._lookup.version
        cache_get = self._cache.get
        values: list[bytes] = []
        missing: list[int] = []
        if _mentions_reserved_keys(raws):
            # Rare: some input already uses an output key; re-encode those events.
            for i, event in enumerate(events):
                suffix = cache_get((event.source, event.severity))
                if suffix is None:
                    missing.append(i)
                    values.append(b"")
                else:
                    values.append(self._encode(event, event_times[i], raws[i], suffix))
        else:
            # Hot loop: splice_enriched inlined (one format op per event, no call).
            fmt = SPLICE_FORMAT
            append = values.append
            for i, (event, raw, ms) in enumerate(zip(events, raws, event_times, strict=True)):
                suffix = cache_get((event.source, event.severity))
                if suffix is None:
                    missing.append(i)
                    append(b"")
                else:
                    append(fmt % (raw.rstrip()[:-1], ms, suffix))
        unknown = degraded = 0
        if missing:
            degraded = self._fill_missing(events, event_times, raws, missing, values)
        if self._unknown_sources:
            unknown_sources = self._unknown_sources
            unknown = sum(1 for e in events if e.source in unknown_sources)
        return EnrichResult(values, unknown, degraded)

    def _fill_missing(
        self,
        events: Sequence[Event],
        event_times: Sequence[int],
        raws: Sequence[bytes],
        missing: list[int],
        values: list[bytes],
    ) -> int:
        """Look up the sources the cache lacks (one call per batch) and encode those events."""
        sources = {events[i].source for i in missing}
        found = self._fetch(sources)
        if found is None:
            for i in missing:
                event = events[i]
                values[i] = self._encode(
                    event, event_times[i], raws[i], self._degraded_suffix(event)
                )
            return len(missing)
        for source in sources:
            if source not in found:
                self._unknown_sources.add(source)
        for i in missing:
            event = events[i]
            key = (event.source, event.severity)
            suffix = self._cache.get(key)
            if suffix is None:
                suffix = self._suffix(event.severity, found.get(event.source))
                self._cache[key] = suffix
            values[i] = self._encode(event, event_times[i], raws[i], suffix)
        return 0

    @staticmethod
    def _encode(event: Event, event_time_ms: int, raw: bytes, suffix: bytes) -> bytes:
        if any(key in raw for key in RESERVED_OUTPUT_KEYS):
            return encode_enriched(event, event_time_ms, suffix)
        return splice_enriched(raw, event_time_ms, suffix)

    def _fetch(self, sources: set[str]) -> Mapping[str, ServiceInfo] | None:
        breaker = self._breaker
        if breaker is not None and not breaker.allow():
            return None
        try:
            found = self._lookup.lookup(sources)
        except TransientError as exc:
            if breaker is not None:
                breaker.record_failure(exc)
            return None
        if breaker is not None:
            breaker.record_success()
        return found

    def score(self, severity: str, tier: int | None) -> float:
        """Severity rank (1..5) times the tier weight (unknown tier weighs 1)."""
        weight = self._weights.get(tier, 1.0) if tier is not None else 1.0
        return float(SEVERITY_RANK[severity] + 1) * weight

    def _suffix(self, severity: str, info: ServiceInfo | None) -> bytes:
        if info is None:
            enrichment = Enrichment(known_service=False, score=self.score(severity, None))
        else:
            enrichment = Enrichment(
                known_service=True,
                score=self.score(severity, info.tier),
                team=info.team,
                tier=info.tier,
                owner=info.owner,
            )
        return encoder.encode(enrichment)

    def _degraded_suffix(self, event: Event) -> bytes:
        return encoder.encode(
            Enrichment(known_service=False, score=self.score(event.severity, None), degraded=True)
        )


def _mentions_reserved_keys(raws: Sequence[bytes]) -> bool:
    """One C-speed search over the whole batch instead of two searches per event."""
    joined = b"".join(raws)
    return any(key in joined for key in RESERVED_OUTPUT_KEYS)


class ReferenceTable:
    """In-memory reference data, fed by the compacted topic reader; never fails a lookup."""

    def __init__(self) -> None:
        self._services: dict[str, ServiceInfo] = {}
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def __len__(self) -> int:
        return len(self._services)

    def apply(self, updates: Sequence[tuple[str, ServiceInfo | None]]) -> None:
        """Apply upserts (info) and deletions (None = tombstone) in order."""
        if not updates:
            return
        for name, info in updates:
            if info is None:
                self._services.pop(name, None)
            else:
                self._services[name] = info
        self._version += 1

    def lookup(self, sources: Collection[str]) -> Mapping[str, ServiceInfo]:
        services = self._services
        return {s: services[s] for s in sources if s in services}
