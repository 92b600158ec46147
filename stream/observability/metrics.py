"""Every Prometheus metric the processor exports, in one place.

Naming follows Prometheus conventions (``stream_`` prefix, ``_total`` counters,
base units ``_seconds``/``_bytes``, histograms rather than summaries). Label
sets are small and bounded: topic, partition, stage, error class, rule, breaker
name. Nothing is labelled by event id, key or source.

The hot path updates these once per *batch* (``inc(n)``, ``observe`` of a batch
size), never once per event. Dashboards (deploy/grafana) and alert rules
(deploy/prometheus) query exactly these names; keep them in sync.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from stream import __version__

#: The registry served at ``/metrics``. A dedicated registry keeps tests and
#: embedded use free of the default registry's process collectors clashing.
REGISTRY: Final = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000)

build_info: Final = Info("stream_build", "Version of the stream processor", registry=REGISTRY)
build_info.info({"version": __version__})

events_consumed_total: Final = Counter(
    "stream_events_consumed_total", "Records consumed from Kafka", ["topic"], registry=REGISTRY
)
events_produced_total: Final = Counter(
    "stream_events_produced_total", "Records produced to Kafka", ["topic"], registry=REGISTRY
)
events_processed_total: Final = Counter(
    "stream_events_processed_total",
    "Events that passed a stage",
    ["stage"],
    registry=REGISTRY,
)
events_rejected_total: Final = Counter(
    "stream_events_rejected_total",
    "Events a stage rejected (sent to the DLQ or dropped)",
    ["stage", "error_class"],
    registry=REGISTRY,
)
errors_total: Final = Counter(
    "stream_errors_total",
    "Errors by stage and class (including non-event errors: produce, commit, lookups)",
    ["stage", "error_class"],
    registry=REGISTRY,
)
dlq_records_total: Final = Counter(
    "stream_dlq_records_total",
    "Records written to the dead-letter topic",
    ["stage"],
    registry=REGISTRY,
)
late_events_total: Final = Counter(
    "stream_late_events_total",
    "Events that arrived after their window closed",
    ["rule"],
    registry=REGISTRY,
)
correlations_total: Final = Counter(
    "stream_correlations_emitted_total", "Correlation records emitted", ["rule"], registry=REGISTRY
)
validation_failures_total: Final = Counter(
    "stream_validation_failures_total",
    "Records the schema rejected, by field path (array indices folded) and broken constraint.",
    ["field", "reason"],
    registry=REGISTRY,
)
field_presence_ratio: Final = Gauge(
    "stream_field_presence_ratio",
    "Share of valid events (sampled per batch) in which an optional top-level field is present.",
    ["field"],
    registry=REGISTRY,
)
events_dropped_total: Final = Counter(
    "stream_events_dropped_total",
    "Valid events dropped on purpose (a join with missing: drop found no value).",
    ["stage"],
    registry=REGISTRY,
)
enrichment_degraded_total: Final = Counter(
    "stream_enrichment_degraded_total",
    "Events passed through without reference data because a lookup was unavailable",
    registry=REGISTRY,
)
stage_duration_seconds: Final = Histogram(
    "stream_stage_duration_seconds",
    "Wall time one stage spent on one batch",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
end_to_end_latency_seconds: Final = Histogram(
    "stream_end_to_end_latency_seconds",
    "Record append time on the input topic to output produce, sampled per batch",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
event_time_lag_seconds: Final = Histogram(
    "stream_event_time_lag_seconds",
    "Event time to processing time, sampled per batch (includes producer clock skew)",
    buckets=(0.01, 0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
batch_size: Final = Histogram(
    "stream_batch_size", "Records per consumed batch", buckets=_BATCH_BUCKETS, registry=REGISTRY
)
consumer_lag: Final = Gauge(
    "stream_consumer_lag",
    "High watermark minus the worker's position, per assigned partition",
    ["topic", "partition"],
    registry=REGISTRY,
)
assigned_partitions: Final = Gauge(
    "stream_assigned_partitions", "Input partitions assigned to this worker", registry=REGISTRY
)
rebalances_total: Final = Counter(
    "stream_rebalances_total", "Partition assignment changes", ["kind"], registry=REGISTRY
)
checkpoint_duration_seconds: Final = Histogram(
    "stream_checkpoint_duration_seconds",
    "Checkpoint start to offsets committed: state written, outputs acknowledged, commit "
    "(at_least_once: the batch loop keeps running meanwhile)",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
gc_pause_seconds: Final = Histogram(
    "stream_gc_pause_seconds",
    "Python garbage-collector pauses of the worker process, by generation",
    ["generation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
replayed_records: Final = Histogram(
    "stream_replayed_records",
    "Input records processed again after an assignment (restart, rebalance, lost session), "
    "per assigned partition: the resume offset against what is known to have been processed "
    "before (the previous owner's last state marker, or this worker's own progress); a lower "
    "bound, records a killed owner processed after its last checkpoint are not known",
    buckets=(0, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000),
    registry=REGISTRY,
)
checkpoints_total: Final = Counter(
    "stream_checkpoints_total", "Checkpoints by outcome", ["outcome"], registry=REGISTRY
)
commit_duration_seconds: Final = Histogram(
    "stream_commit_duration_seconds",
    "Offset commit (or transaction commit) time",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
circuit_breaker_state: Final = Gauge(
    "stream_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ["breaker"],
    registry=REGISTRY,
)
circuit_breaker_transitions_total: Final = Counter(
    "stream_circuit_breaker_transitions_total",
    "Circuit breaker state transitions",
    ["breaker", "to_state"],
    registry=REGISTRY,
)
retries_total: Final = Counter(
    "stream_retries_total", "Retried operations", ["operation"], registry=REGISTRY
)
window_state_keys: Final = Gauge(
    "stream_window_state_keys", "Active window keys held in state", ["rule"], registry=REGISTRY
)
window_state_bytes: Final = Gauge(
    "stream_window_state_bytes", "Approximate bytes of window state", registry=REGISTRY
)
window_state_cap_hits_total: Final = Counter(
    "stream_window_state_cap_hits_total",
    "Events refused because the active-key cap was reached",
    ["rule"],
    registry=REGISTRY,
)
paused_partitions: Final = Gauge(
    "stream_paused_partitions", "Partitions paused for backpressure", registry=REGISTRY
)
batches_in_flight: Final = Gauge(
    "stream_batches_in_flight",
    "Batches fetched and not yet through the agent chain (at most max_inflight_batches: "
    "when it stays there, the chain is the bottleneck and records wait in the client)",
    registry=REGISTRY,
)
worker_ready: Final = Gauge(
    "stream_worker_ready",
    "1 when the worker is assigned and caught up enough to serve",
    registry=REGISTRY,
)
last_poll_timestamp_seconds: Final = Gauge(
    "stream_last_poll_timestamp_seconds", "Unix time the poll loop last turned", registry=REGISTRY
)
offsets_reset_total: Final = Counter(
    "stream_offsets_reset_total",
    "Input positions no longer on the broker (retention or delete-records went past them) that "
    "auto.offset.reset moved, per partition: the records in between were never processed",
    ["topic", "partition"],
    registry=REGISTRY,
)
