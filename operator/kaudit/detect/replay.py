"""Rule-aware replay: what a candidate policy does to the signals of detection rules.

Functions over audit events (dicts, as kube-apiserver wrote them), so any reader can feed them.
Each event is seen three ways: as recorded (the input), as the baseline policy writes it (the
input itself when there is no baseline: "before"), and as the candidate writes it ("after";
:func:`kaudit.detect.coverage.as_recorded`: level None and omitted stages write nothing, bodies
above the level are cut). Every rule runs over the "before" and the "after" stream, in time order,
as :mod:`kaudit.detect.signals` runs it, and the replay counts per rule:

* matches and signals before and after;
* the noise hot spots: the identities (``user.username``) and the requests (verb, resource,
  namespace) of the events it matches after, with the signals each raised;
* the cost of what the rule needs: the bytes the candidate writes for the events the rule
  matches, and, of the events it matches as recorded, the bytes of the bodies it reads (what the
  policy must keep at Request or RequestResponse for this rule alone).

Byte counts are of the events as Go's ``encoding/json`` writes them (:func:`go_json_len`).
An event recorded below the level the policy asks for lacks its bodies; such a replay undercounts
body rules, and the caller's report says so (``under_recorded``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from kaudit.detect.coverage import as_recorded
from kaudit.detect.fields import BODY_LEVELS
from kaudit.detect.model import Rule
from kaudit.detect.query import terms
from kaudit.detect.signals import RuleRunner, Signal
from kaudit.policy.evaluate import Evaluator
from kaudit.policy.model import LEVEL_RANK, Policy

TOP = 5  # hot spots kept per rule


def _default_size(value: Any) -> int:
    from kaudit.simulate.sizes import go_json_len

    return go_json_len(value)


def body_reads(rule: Rule) -> tuple[str, ...]:
    """The top-level bodies (``requestObject``, ``responseObject``) the rule's queries read."""
    from kaudit.detect.query import parse_query

    fields = {t.field for q in rule.queries for t, negated in terms(parse_query(q.query)) if not t.tag and not negated}
    fields |= {f.lstrip("@") for q in rule.queries for f in q.fields()}
    return tuple(sorted({f.split(".", 1)[0] for f in fields} & set(BODY_LEVELS)))


def request_label(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    if not ref:
        return f"{event.get('verb', '?')} {str(event.get('requestURI', '')).partition('?')[0]}"
    resource = str(ref.get("resource", ""))
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    if ref.get("apiGroup"):
        resource += f".{ref['apiGroup']}"
    where = f" in {ref['namespace']}" if ref.get("namespace") else ""
    return f"{event.get('verb', '?')} {resource}{where}"


def _user(event: dict[str, Any]) -> str:
    user = event.get("user") or {}
    return str(user.get("username", "")) if isinstance(user, dict) else ""


@dataclass
class _Side:
    runner: RuleRunner
    matches: int = 0
    signals: int = 0

    def feed(self, event: dict[str, Any]) -> list[Signal] | None:
        """None when no query matched, else the signals raised."""
        hits = [i for i, match in enumerate(self.runner.matchers) if match(event)]
        if not hits:
            return None
        self.matches += 1
        signals = self.runner.matched(event, hits)
        self.signals += len(signals)
        return signals


@dataclass
class RuleReplay:
    rule: Rule
    before: _Side
    after: _Side
    reads: tuple[str, ...]
    identities: Counter[str] = field(default_factory=Counter)  # matches after, by user
    identity_signals: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    request_signals: Counter[str] = field(default_factory=Counter)
    bytes_after: int = 0  # what the candidate writes for the events this rule matches
    body_bytes: int = 0  # the bodies this rule reads, in the events it matches as recorded
    recorded_matches: int = 0


class DetectionReplay:
    """Feed events (time order) with :meth:`feed`; read :meth:`document` at the end."""

    def __init__(self, rules: Iterable[Rule], candidate: Policy, baseline: Policy | None = None,
                 tags: dict[str, tuple[str, ...]] | None = None,
                 size: Callable[[Any], int] = _default_size) -> None:
        self.candidate = Evaluator(candidate)
        self.baseline = Evaluator(baseline) if baseline is not None else None
        self.size = size
        self.rules = [RuleReplay(rule, _Side(RuleRunner(rule, tags)), _Side(RuleRunner(rule, tags)),
                                 body_reads(rule)) for rule in rules]
        self.events = 0
        self.under_recorded = 0  # events recorded below the candidate's level for them

    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
        before = as_recorded(event, self.baseline) if self.baseline is not None else event
        after = as_recorded(event, self.candidate)
        if after is not None and LEVEL_RANK.get(str(event.get("level")), 0) < LEVEL_RANK[after["level"]]:
            self.under_recorded += 1
        for replay in self.rules:
            # matching is stateless: the "after" runner's compiled queries serve for the input too
            if replay.reads and any(match(event) for match in replay.after.runner.matchers):
                replay.recorded_matches += 1
                replay.body_bytes += sum(self.size(event[key]) for key in replay.reads if key in event)
            if before is not None:
                replay.before.feed(before)
            if after is None:
                continue
            signals = replay.after.feed(after)
            if signals is None:
                continue
            who, what = _user(after), request_label(after)
            replay.identities[who] += 1
            replay.requests[what] += 1
            replay.identity_signals[who] += len(signals)
            replay.request_signals[what] += len(signals)
            replay.bytes_after += self.size(after)

    def feed_lines(self, lines: list[bytes]) -> None:
        """Raw log lines, read by the one audit-log reader (every member as a dict, the checks of
        ``policy eval`` and ``simulate``); malformed lines are skipped here, the simulation that
        reads the same lines reports them."""
        from kaudit.auditlog import event_mappings

        for event in event_mappings(lines):
            if type(event) is dict and type(event.get("requestReceivedTimestamp") or event.get("stageTimestamp")) is str:
                self.feed(event)

    def document(self) -> dict[str, Any]:
        """The ``detection`` section of a simulation report (keys only ever added)."""
        return {
            "events": self.events, "underRecorded": self.under_recorded,
            "rules": [_rule_document(r) for r in self.rules],
        }


def _top(counts: Counter[str], signals: Counter[str], key: str) -> list[dict[str, Any]]:
    ranked = sorted(counts, key=lambda k: (-signals[k], -counts[k], k))[:TOP]
    return [{key: k, "matches": counts[k], "signals": signals[k]} for k in ranked]


def _rule_document(r: RuleReplay) -> dict[str, Any]:
    return {
        "name": r.rule.name,
        "matches": {"before": r.before.matches, "after": r.after.matches},
        "signals": {"before": r.before.signals, "after": r.after.signals},
        "hotIdentities": _top(r.identities, r.identity_signals, "user"),
        "hotRequests": _top(r.requests, r.request_signals, "request"),
        "cost": {"reads": list(r.reads), "bytesAfter": r.bytes_after, "bodyBytes": r.body_bytes,
                 "bodyEvents": r.recorded_matches},
    }


def replay_events(events: Iterable[dict[str, Any]], rules: Iterable[Rule], candidate: Policy,
                  baseline: Policy | None = None, **options: Any) -> dict[str, Any]:
    replay = DetectionReplay(rules, candidate, baseline, **options)
    for event in events:
        replay.feed(event)
    return replay.document()


def detection_table(section: dict[str, Any]) -> list[str]:
    """The section as text lines (for the simulate table)."""
    from kaudit.simulate.views import human_bytes

    lines = [f"Detection rules ({section['events']} events)",
             f"  {'signals':>15}  {'matches':>15}  {'bytes':>9}  {'bodies':>9}  rule",
             f"  {'before → after':>15}  {'before → after':>15}  {'(after)':>9}  {'read':>9}"]
    for rule in section["rules"]:
        s, m, cost = rule["signals"], rule["matches"], rule["cost"]
        bodies = human_bytes(cost["bodyBytes"]) if cost["reads"] else "-"
        lines.append(f"  {s['before']:>6} → {s['after']:<6}  {m['before']:>6} → {m['after']:<6}  "
                     f"{human_bytes(cost['bytesAfter']):>9}  {bodies:>9}  {rule['name']}")
        for spot in rule["hotIdentities"][:2]:
            if spot["signals"]:
                lines.append(f"      {spot['signals']} signal(s) from {spot['user']} ({spot['matches']} matches)")
        for spot in rule["hotRequests"][:2]:
            if spot["signals"]:
                lines.append(f"      {spot['signals']} signal(s) on {spot['request']} ({spot['matches']} matches)")
    if section["underRecorded"]:
        lines.append(f"  - {section['underRecorded']} event(s) were recorded below the candidate's level: the "
                     f"bodies they lack are missing here too, so body rules may count low")
    return lines
