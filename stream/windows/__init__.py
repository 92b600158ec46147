"""Event-time windows and correlation rules (pure logic, no Kafka).

Layers, bottom up: :mod:`~stream.windows.spec` (what users write) →
:mod:`~stream.windows.fields` / :mod:`~stream.windows.compiled` (rules turned
into compiled selectors and plain objects) → :mod:`~stream.windows.clock`
(watermarks) → the stores (:mod:`~stream.windows.fixed` for tumbling/hopping,
:mod:`~stream.windows.sessions`, :mod:`~stream.windows.sequence`) →
:mod:`~stream.windows.partition` (one partition's state and changelog).
:class:`stream.stages.correlate.Correlator` drives them per batch.
"""

from stream.windows.rules import Rule
from stream.windows.spec import (
    DEFAULT_RULES,
    AnomalyRuleSpec,
    HoppingWindow,
    RatioRuleSpec,
    RuleSpec,
    SequenceRuleSpec,
    SessionWindow,
    ThresholdRuleSpec,
    TumblingWindow,
    parse_rules,
    parse_rules_yaml,
)

__all__ = [
    "DEFAULT_RULES",
    "AnomalyRuleSpec",
    "HoppingWindow",
    "RatioRuleSpec",
    "Rule",
    "RuleSpec",
    "SequenceRuleSpec",
    "SessionWindow",
    "ThresholdRuleSpec",
    "TumblingWindow",
    "parse_rules",
    "parse_rules_yaml",
]
