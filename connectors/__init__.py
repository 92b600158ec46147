"""Sources and sinks that move events between Kafka and other systems.

::

    files (CSV, NDJSON, JSON, Parquet) ──▶ stream ingest ──▶ events (+ events.dlq)
    HTTP POST /events                  ──▶ stream ingest --http
    events.enriched ──▶ stream sink postgres | file ──▶ PostgreSQL table / rolling files

Every connector keeps the processor's checkpoint rule: progress (a resume
position, a committed offset) is recorded only after the data it covers is
durable on the other side, so a crash replays and never loses. Contracts are
in :mod:`connectors.base`; connectors are looked up by name or URL scheme in
:mod:`connectors.registry`, which imports them (and their optional
dependencies) only when used.
"""
