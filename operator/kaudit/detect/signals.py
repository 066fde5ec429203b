"""Run detection rules over audit events offline: which signals they would raise.

Threshold rules: per group (the values of ``groupByFields``; an event without one of them is not
counted, it has no group), each query's aggregation over the events of the last
``evaluationWindow`` seconds (``count``, ``cardinality`` of ``distinctFields``, ``sum``/``max`` of
the metric); the first case whose condition holds opens a signal, which stays open (no new signal
for that group and case) while matches keep coming within ``keepAlive`` and for at most
``maxSignalDuration``.

New-value rules: per group, a value of the watched field not seen before raises a signal, except
while learning: with ``learningDuration`` D days, values seen in the first D days after the group's
first event are learned silently; with 0, only the very first value is (the API's documented
meaning). A value unseen for ``forgetAfter`` days is forgotten. Event time is
``requestReceivedTimestamp`` (else ``stageTimestamp``).

Other detection methods are refused (:class:`Unsupported`): kaudit checks their coverage but does
not evaluate them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from kaudit.detect.conditions import parse_condition
from kaudit.detect.fields import getter
from kaudit.detect.model import Rule, query_names
from kaudit.detect.query import compile_text

DAY = 86400.0


class Unsupported(ValueError):
    pass


@dataclass(frozen=True)
class Signal:
    rule: str
    case: str
    status: str
    group: tuple[Any, ...]
    time: float
    value: object = None  # the new value (new_value rules)


def event_time(event: dict[str, Any]) -> float:
    stamp = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
    if type(stamp) is not str:
        raise ValueError("an event needs requestReceivedTimestamp to be placed in time")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _first(values: list[Any]) -> Any:
    value = values[0] if values else None
    return value if type(value) in (str, int, float, bool) else (None if value is None else repr(value))


class RuleRunner:
    """A rule compiled for evaluation; feed events in time order with :meth:`feed`."""

    def __init__(self, rule: Rule, tags: dict[str, Any] | None = None):
        method = rule.options.detection_method
        if method not in ("threshold", "new_value"):
            raise Unsupported(f"{rule.name}: detection method {method} is not evaluated by kaudit")
        self.rule = rule
        self.names = query_names(rule)
        self.matchers = [compile_text(q.query, tags).match for q in rule.queries]
        self.single = self.matchers[0] if len(self.matchers) == 1 else None
        self.group_getters = [[getter(f.lstrip("@")) for f in q.group_by_fields] for q in rule.queries]
        self.distinct = [[getter(f.lstrip("@")) for f in q.distinct_fields] for q in rule.queries]
        self.metric = [getter(q.metrics[0].lstrip("@")) if q.metrics else None for q in rule.queries]
        self.cases = [(case, parse_condition(case.condition, self.names)) for case in rule.cases]
        self.window = float(rule.options.evaluation_window)
        self.keep_alive = float(rule.options.keep_alive)
        self.max_duration = float(rule.options.max_signal_duration)
        self.recent: dict[tuple[Any, ...], deque[tuple[float, tuple[Any, ...], Any]]] = {}  # (query, group) -> (time, distinct key, metric value)
        self.open: dict[tuple[Any, ...], tuple[float, float]] = {}  # (group, case) -> (opened, last match)
        self.learned: dict[tuple[Any, ...], dict[str, Any]] = {}  # group -> {value: last seen}
        self.first_seen: dict[tuple[Any, ...], float] = {}

    def feed(self, event: dict[str, Any]) -> list[Signal]:
        if self.single is not None:  # one query (most rules): no list per event that matches nothing
            if not self.single(event):
                return []
            hits = [0]
        else:
            hits = [i for i, match in enumerate(self.matchers) if match(event)]
            if not hits:
                return []
        return self.matched(event, hits)

    def matched(self, event: dict[str, Any], hits: list[int]) -> list[Signal]:
        """The signals of an event the queries ``hits`` (indexes) matched."""
        when = event_time(event)
        if self.rule.options.detection_method == "new_value":
            return [s for i in hits for s in self._new_value(i, event, when)]
        return self._threshold(hits, event, when)

    def _group(self, i: int, event: dict[str, Any]) -> tuple[Any, ...] | None:
        values = tuple(_first(get(event)) for get in self.group_getters[i])
        return None if any(v is None for v in values) else values

    def _new_value(self, i: int, event: dict[str, Any], when: float) -> list[Signal]:
        group = self._group(i, event)
        get = self.metric[i]
        value = _first(get(event)) if get else None
        if group is None or value is None:
            return []
        options = self.rule.options.new_value_options
        learning = (options.learning_duration if options else 0) * DAY
        forget = (options.forget_after if options else 7) * DAY
        seen = self.learned.setdefault((i, group), {})
        first = self.first_seen.setdefault((i, group), when)
        known = value in seen and when - seen[value] <= forget
        seen[value] = when
        if known or len(seen) == 1 and not learning or when - first < learning:
            return []
        case = self.rule.cases[0]
        return [Signal(self.rule.name, case.name, case.status, group, when, value)]

    def _threshold(self, hits: list[int], event: dict[str, Any], when: float) -> list[Signal]:
        signals: list[Signal] = []
        groups = {g for g in (self._group(i, event) for i in hits) if g is not None}
        for i in hits:
            group = self._group(i, event)
            if group is None:
                continue
            key = tuple(_first(get(event)) for get in self.distinct[i])
            get = self.metric[i]
            metric = _first(get(event)) if get else 1
            self.recent.setdefault((i, group), deque()).append((when, key, metric))
        for group in groups:
            values = {name: self._aggregate(i, group, when) for i, name in enumerate(self.names)}
            for case, condition in self.cases:
                if not condition(values):
                    continue
                opened = self.open.get((group, case.name))
                if opened and when - opened[1] <= self.keep_alive and when - opened[0] <= self.max_duration:
                    self.open[(group, case.name)] = (opened[0], when)
                else:
                    self.open[(group, case.name)] = (when, when)
                    signals.append(Signal(self.rule.name, case.name, case.status, group, when))
                break  # the first matching case decides, as in Datadog
        return signals

    def _aggregate(self, i: int, group: tuple[Any, ...], when: float) -> float:
        window = self.recent.get((i, group))
        if not window:
            return 0
        while window and when - window[0][0] > self.window:
            window.popleft()
        aggregation = self.rule.queries[i].aggregation
        if aggregation == "cardinality":
            return len({key for _, key, _ in window})
        numbers: list[float] = [m for _, _, m in window if type(m) in (int, float)]
        if aggregation == "sum":
            return sum(numbers)
        if aggregation == "max":
            return max(numbers, default=0)
        return len(window)


class RuleSet:
    """Several rules over one stream of events; the queries run first, the rest only on a match."""

    def __init__(self, rules: Iterable[Rule], tags: dict[str, Any] | None = None):
        self.runners = [RuleRunner(rule, tags) for rule in rules]
        self._single = [(r.single, r) for r in self.runners if r.single is not None]
        self._multi = [r for r in self.runners if r.single is None]
        self._hit = [0]

    def feed(self, event: dict[str, Any]) -> list[Signal]:
        out: list[Signal] = []
        for match, runner in self._single:
            if match(event):
                out += runner.matched(event, self._hit)
        for runner in self._multi:
            out += runner.feed(event)
        return out


def run_rule(rule: Rule, events: Iterable[dict[str, Any]], tags: dict[str, Any] | None = None) -> list[Signal]:
    runner = RuleRunner(rule, tags)
    return [signal for event in events for signal in runner.feed(event)]
