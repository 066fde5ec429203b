"""Datadog Cloud SIEM log detection rules as typed, immutable data.

Field names and allowed values follow the rules API (``/api/v2/security_monitoring/rules``) as the
official client models it (``SecurityMonitoringStandardRule*``, ``SecurityMonitoringRuleOptions``,
``SecurityMonitoringRuleNewValueOptions*``). Durations are seconds, except the new-value options,
which the API gives in days. The loaders (:mod:`kaudit.detect.loaders`) build these from the API's
JSON and from Terraform's JSON syntax; :mod:`kaudit.detect.render` writes them back.
"""

from __future__ import annotations

from dataclasses import dataclass

# Windows in seconds the API accepts for evaluationWindow, keepAlive and maxSignalDuration.
WINDOW_SECONDS = (0, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
AGGREGATIONS = ("count", "cardinality", "sum", "max", "new_value", "geo_data", "event_count", "none")
DETECTION_METHODS = ("threshold", "new_value", "anomaly_detection", "impossible_travel", "hardcoded",
                     "third_party", "anomaly_threshold", "sequence_detection")
STATUSES = ("info", "low", "medium", "high", "critical")
FORGET_AFTER_DAYS = (1, 2, 7, 14, 21, 28)
LEARNING_DURATION_DAYS = (0, 1, 7)
LEARNING_METHODS = ("duration", "threshold")
LEARNING_THRESHOLDS = (0, 1)
RULE_TYPES = ("log_detection",)
# A rule with this tag never fails `kaudit rules check` (it is still reported).
OPTIONAL_TAG = "kaudit:optional"
# Every rule kaudit writes carries it; a sync touches only rules with it (and its owner's tag).
MANAGED_TAG = "managed-by:kaudit"


@dataclass(frozen=True)
class Query:
    query: str
    name: str = ""  # what case conditions call it; "" means the letter of its position (a, b, ...)
    aggregation: str = "count"
    group_by_fields: tuple[str, ...] = ()
    distinct_fields: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()  # the field(s) new_value watches, or sum/max add up

    def fields(self) -> tuple[str, ...]:
        """Every attribute the aggregation reads besides the query itself."""
        return self.group_by_fields + self.distinct_fields + self.metrics


@dataclass(frozen=True)
class Case:
    status: str
    condition: str = ""  # "" is always true (new_value rules)
    name: str = ""


@dataclass(frozen=True)
class NewValueOptions:
    forget_after: int = 7  # days
    learning_duration: int = 0  # days
    learning_method: str = "duration"
    learning_threshold: int = 0


@dataclass(frozen=True)
class Options:
    detection_method: str = "threshold"
    evaluation_window: int = 300
    keep_alive: int = 3600
    max_signal_duration: int = 86400
    new_value_options: NewValueOptions | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    queries: tuple[Query, ...]
    cases: tuple[Case, ...]
    options: Options = Options()
    message: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    type: str = "log_detection"
    source: str = ""  # where the rule came from: "FILE", "FILE: rules[2]", "pack"

    @property
    def optional(self) -> bool:
        return OPTIONAL_TAG in self.tags


def query_names(rule: Rule) -> tuple[str, ...]:
    """The name case conditions use for each query: its own, else a, b, c... by position."""
    return tuple(q.name or chr(ord("a") + i) for i, q in enumerate(rule.queries))
