"""Capacity planning: from a target event rate to partitions, replicas and KEDA settings.

Why a module of its own: the numbers in ``deploy/k8s`` (partition count,
``minReplicaCount``/``maxReplicaCount``, ``lagThreshold``) must follow from one
measured fact — how many events per second one worker sustains — and the same
arithmetic must be reproducible by operators (``stream plan``) and checked by
tests against the committed overlays. Everything here is pure: no I/O, no clock.

The model, in the order it is applied:

* ``usable = per_worker_rate * (1 - headroom)``: plan each replica at, say,
  70 % of what it was measured to sustain, so a slower node, GC pauses or a
  rebalance do not put the group behind.
* ``min_replicas = max(availability floor, ceil(target_rate / usable))``: enough
  workers to carry the target rate at steady state; never fewer than two, so a
  PodDisruptionBudget of ``maxUnavailable: 1`` leaves one worker consuming.
* ``max_replicas = ceil(target_rate * burst_factor / usable)``: enough to drain a
  backlog while new events keep arriving at the target rate.
* ``partitions``: a Kafka consumer group can use at most one consumer per
  partition, so the topic needs at least ``max_replicas`` partitions. Partition
  counts cannot shrink, so the smallest *highly divisible* count at or above the
  need is chosen (12 spreads evenly over 1, 2, 3, 4, 6 and 12 workers). When the
  topic already exists (``partitions`` given) the replica range is capped at it
  and a warning says what it costs.
* KEDA's Kafka trigger scales to ``ceil(total lag / lagThreshold)`` replicas. The
  per-replica *lag budget* is what one worker drains in ``max_lag_seconds`` at its
  measured rate; ``lagThreshold`` is 80 % of it, so replicas are added before a
  worker is a full budget behind. Kubernetes' HPA has one target, not a band; the
  "scale down only below ~20 %" side is approximated by a long scale-down
  stabilization window and a one-pod-per-minute policy (each scale event is a
  consumer-group rebalance), and on clusters with configurable HPA tolerance
  (Kubernetes >= 1.33, feature gate ``HPAConfigurableTolerance``) exactly by
  ``scaleDown.tolerance = 1 - 0.2 / 0.8 = 0.75``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: Per-worker throughput assumed when no benchmark result is available: one worker
#: process on one core against a JVM broker on the same host. Deliberately below the
#: batch-path figures in the design notes (350k/s with an in-memory broker), because
#: a real broker takes CPU and production events are larger than benchmark events.
DEFAULT_PER_WORKER_RATE: Final = 50_000.0
DEFAULT_HEADROOM: Final = 0.3
DEFAULT_BURST_FACTOR: Final = 2.0
DEFAULT_MAX_LAG_SECONDS: Final = 10.0
#: Fewer than two replicas would let a single voluntary disruption stop consumption.
DEFAULT_MIN_REPLICAS_FLOOR: Final = 2

#: Scale up once a replica's lag exceeds this fraction of its lag budget ...
SCALE_UP_FRACTION: Final = 0.8
#: ... and only consider scaling down when it is below this fraction.
SCALE_DOWN_FRACTION: Final = 0.2

#: Scaling behaviour written into the ScaledObject (seconds). Scale-up reacts
#: within one polling interval plus a short stabilization; scale-down waits five
#: minutes of low lag and then removes one pod per minute, because every replica
#: change triggers a group rebalance that pauses consumption.
POLLING_INTERVAL_S: Final = 15
COOLDOWN_PERIOD_S: Final = 300
SCALE_UP_STABILIZATION_S: Final = 30
SCALE_DOWN_STABILIZATION_S: Final = 300
SCALE_DOWN_PODS_PER_MINUTE: Final = 1

#: Partition counts with many divisors, so replicas share partitions evenly.
_DIVISIBLE_COUNTS: Final = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)

#: Keys under which a benchmark row may name its system, and the value naming ours.
_SYSTEM_KEYS: Final = ("system", "name", "framework", "pipeline", "impl")
_OUR_SYSTEM: Final = "stream"
_RATE_KEY: Final = "events_per_s"


class PlanningError(ValueError):
    """An input that makes no plan possible (non-positive rate, headroom >= 1, ...)."""


@dataclass(frozen=True, slots=True)
class PlanInputs:
    target_rate: float
    per_worker_rate: float = DEFAULT_PER_WORKER_RATE
    headroom: float = DEFAULT_HEADROOM
    burst_factor: float = DEFAULT_BURST_FACTOR
    max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS
    min_replicas_floor: int = DEFAULT_MIN_REPLICAS_FLOOR
    #: Partition count of an existing input topic; ``None`` lets the plan choose.
    partitions: int | None = None

    def check(self) -> None:
        if not self.target_rate > 0:
            raise PlanningError(f"--target-rate must be > 0, got {self.target_rate:g}")
        if not self.per_worker_rate > 0:
            raise PlanningError(f"--per-worker-rate must be > 0, got {self.per_worker_rate:g}")
        if not 0 <= self.headroom < 1:
            raise PlanningError(f"--headroom must be in [0, 1), got {self.headroom:g}")
        if not self.burst_factor >= 1:
            raise PlanningError(f"--burst-factor must be >= 1, got {self.burst_factor:g}")
        if not self.max_lag_seconds > 0:
            raise PlanningError(f"--max-lag-seconds must be > 0, got {self.max_lag_seconds:g}")
        if self.min_replicas_floor < 1:
            raise PlanningError(f"--min-replicas must be >= 1, got {self.min_replicas_floor}")
        if self.partitions is not None and self.partitions < 1:
            raise PlanningError(f"--partitions must be >= 1, got {self.partitions}")


@dataclass(frozen=True, slots=True)
class Plan:
    inputs: PlanInputs
    usable_rate_per_worker: float
    replicas_needed: int
    min_replicas: int
    max_replicas: int
    partitions: int
    lag_budget_per_replica: int
    lag_threshold: int
    scale_down_lag: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def max_sustainable_rate(self) -> float:
        """Events/s the group carries at ``max_replicas`` within the headroom."""
        return self.max_replicas * self.usable_rate_per_worker


def smallest_divisible_count(at_least: int) -> int:
    """The smallest highly divisible partition count >= ``at_least``."""
    for count in _DIVISIBLE_COUNTS:
        if count >= at_least:
            return count
    step = _DIVISIBLE_COUNTS[-1] // 2
    return math.ceil(at_least / step) * step


def make_plan(inputs: PlanInputs) -> Plan:
    """Apply the model in the module docstring; raises PlanningError on bad inputs."""
    inputs.check()
    usable = inputs.per_worker_rate * (1.0 - inputs.headroom)
    needed = math.ceil(inputs.target_rate / usable)
    wanted_min = max(inputs.min_replicas_floor, needed)
    wanted_max = max(wanted_min, math.ceil(inputs.target_rate * inputs.burst_factor / usable))
    warnings: list[str] = []

    if inputs.partitions is None:
        partitions = smallest_divisible_count(wanted_max)
    else:
        partitions = inputs.partitions
        if needed > partitions:
            warnings.append(
                f"the target rate needs {needed} replicas but the topic has only {partitions} "
                f"partitions: at most {partitions * usable:,.0f} events/s; add partitions "
                f"(at least {smallest_divisible_count(wanted_max)})"
            )
        elif wanted_max > partitions:
            warnings.append(
                f"replicas would exceed partitions ({wanted_max} > {partitions}): "
                f"maxReplicaCount capped at {partitions}; backlog drains at "
                f"{partitions * usable - inputs.target_rate:,.0f} events/s instead of "
                f"{wanted_max * usable - inputs.target_rate:,.0f}"
            )
        if wanted_min > partitions:
            warnings.append(
                f"minReplicaCount capped at {partitions}: extra consumers would sit idle"
            )

    max_replicas = min(wanted_max, partitions)
    min_replicas = min(wanted_min, max_replicas)
    budget = math.ceil(inputs.per_worker_rate * inputs.max_lag_seconds)
    return Plan(
        inputs=inputs,
        usable_rate_per_worker=usable,
        replicas_needed=needed,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        partitions=partitions,
        lag_budget_per_replica=budget,
        lag_threshold=max(1, math.ceil(budget * SCALE_UP_FRACTION)),
        scale_down_lag=math.floor(budget * SCALE_DOWN_FRACTION),
        warnings=tuple(warnings),
    )


def scale_down_tolerance() -> float:
    """HPA ``scaleDown.tolerance`` that turns the single target into the 80/20 band."""
    return round(1.0 - SCALE_DOWN_FRACTION / SCALE_UP_FRACTION, 4)


def scaled_object(
    plan: Plan,
    *,
    name: str,
    deployment: str,
    bootstrap_servers: str,
    consumer_group: str,
    topic: str,
) -> dict[str, Any]:
    """A KEDA ``ScaledObject`` (keda.sh/v1alpha1) carrying the plan's numbers."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": name,
            "annotations": {"stream-processor/input-partitions": str(plan.partitions)},
        },
        "spec": {
            "scaleTargetRef": {"name": deployment},
            "pollingInterval": POLLING_INTERVAL_S,
            "cooldownPeriod": COOLDOWN_PERIOD_S,
            "minReplicaCount": plan.min_replicas,
            "maxReplicaCount": plan.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": SCALE_UP_STABILIZATION_S,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Percent", "value": 100, "periodSeconds": 30},
                                {"type": "Pods", "value": 4, "periodSeconds": 30},
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION_S,
                            "selectPolicy": "Min",
                            "policies": [
                                {
                                    "type": "Pods",
                                    "value": SCALE_DOWN_PODS_PER_MINUTE,
                                    "periodSeconds": 60,
                                }
                            ],
                        },
                    }
                }
            },
            "triggers": [
                {
                    "type": "kafka",
                    "metadata": {
                        "bootstrapServers": bootstrap_servers,
                        "consumerGroup": consumer_group,
                        "topic": topic,
                        "lagThreshold": str(plan.lag_threshold),
                        "offsetResetPolicy": "earliest",
                        "allowIdleConsumers": "false",
                        "scaleToZeroOnInvalidOffset": "false",
                    },
                }
            ],
        },
    }


def per_worker_rate_from_results(document: object) -> float | None:
    """Our ``events_per_s`` from one parsed ``benchmarks/results/*.json`` document.

    Accepts a list of rows, or a mapping holding them under ``rows``/``results``,
    or a mapping keyed by system name. A row is ours when one of ``system``,
    ``name``, ``framework``, ``pipeline``, ``impl`` equals ``"stream"``. Returns
    None when the document holds no positive figure for us.
    """
    for row in _rows(document):
        if any(row.get(key) == _OUR_SYSTEM for key in _SYSTEM_KEYS):
            rate = row.get(_RATE_KEY)
            if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
                return float(rate)
    return None


def _rows(document: object) -> Iterable[Mapping[str, Any]]:
    if isinstance(document, list):
        return [row for row in document if isinstance(row, Mapping)]
    if not isinstance(document, Mapping):
        return []
    for key in ("rows", "results"):
        nested = document.get(key)
        if isinstance(nested, list):
            return _rows(nested)
    ours = document.get(_OUR_SYSTEM)
    if isinstance(ours, Mapping):
        return [{"system": _OUR_SYSTEM, **ours}]
    return [document]
