"""Replay audit events through one or two policies and tally what each would write.

The hot loop parses each line once, looks the request's shape up in a bounded cache (on a miss it
asks the policy engine's evaluator for each policy's decision), and estimates the written size from
the line itself (:mod:`kaudit.simulate.sizes`). Every accumulator is bounded: per-rule and
per-level tallies are fixed-size; the top-source, exposure and level-change tables are
:class:`TopCounter` instances.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from kaudit.policy.evaluate import AttributeUse, RequestAttributes, attributes_from_event
from kaudit.policy.model import LEVEL_RANK, LEVELS, STAGES, Policy
from kaudit.simulate.counters import TopCounter
from kaudit.simulate.inputs import InputFile
from kaudit.simulate.sizes import (
    BODY_STAGES, RANK_REQUEST, RANK_REQUEST_RESPONSE, SizeEstimator, bodies_missing,
)

MALFORMED_EXAMPLES = 5
# Only kube-apiserver's own stage names are accepted: the per-stage counts are keyed by stage, so
# arbitrary strings there would make them grow with the input.
_STAGE_NAMES = frozenset(STAGES)
WRITTEN_LEVELS = LEVELS[1:]
_REQUEST_BODY_VERBS = frozenset(("create", "update", "patch"))
# kube-apiserver's long-running requests (its LongRunningFunc): these verbs, and these subresources
# of any resource. Only they get a ResponseStarted event, one per request.
_LONG_RUNNING_VERBS = frozenset(("watch", "proxy"))
_LONG_RUNNING_SUBRESOURCES = frozenset(("attach", "exec", "proxy", "log", "portforward"))


# A policy's decision for a request's attributes (the policy engine's ``Evaluator.evaluate``): an
# object with ``level``, ``omit_stages``, ``omit_managed_fields`` and ``rule``.
Decide = Callable[[RequestAttributes], Any]


def resource_label(event: dict) -> str:
    """``pods``, ``deployments.apps/scale``, or the non-resource path (``/healthz``)."""
    ref = event.get("objectRef")
    if isinstance(ref, dict) and ref.get("resource"):
        label = ref["resource"]
        if ref.get("apiGroup"):
            label = f"{label}.{ref['apiGroup']}"
        if ref.get("subresource"):
            label = f"{label}/{ref['subresource']}"
        return label
    return str(event.get("requestURI", "")).split("?", 1)[0]


def sensitive_bodies(catalog: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(apiGroup, resource[/subresource]) -> (request body sensitive, response body sensitive).

    Every listed resource is sensitive both ways, except the TokenRequest: its request only names
    audiences, its response is the token.
    """
    table = {entry: (True, True) for entry in catalog}
    if ("", "serviceaccounts/token") in table:
        table[("", "serviceaccounts/token")] = (False, True)
    return table


def _succeeded(event: dict) -> bool:
    """Whether the response carried an object rather than an error Status (no code: assume so)."""
    status = event.get("responseStatus")
    code = status.get("code") if isinstance(status, dict) else None
    return not isinstance(code, int) or code < 300


def is_long_running(event: dict) -> bool:
    ref = event.get("objectRef")
    subresource = ref.get("subresource") if isinstance(ref, dict) and ref.get("resource") else None
    return event.get("verb") in _LONG_RUNNING_VERBS or subresource in _LONG_RUNNING_SUBRESOURCES


class RuleTally:
    __slots__ = ("matched", "written", "omitted", "bytes", "under_recorded")

    def __init__(self) -> None:
        self.matched = self.written = self.omitted = self.bytes = self.under_recorded = 0


class PolicyTally:
    """Everything one policy would write for the events seen so far."""

    def __init__(self, policy: Policy, top_capacity: int):
        self.policy = policy
        self.rules = [RuleTally() for _ in range(len(policy.rules) + 1)]  # last: no rule matched
        self.level_events = dict.fromkeys(WRITTEN_LEVELS, 0)
        self.level_bytes = dict.fromkeys(WRITTEN_LEVELS, 0)
        self.level_under = dict.fromkeys(WRITTEN_LEVELS, 0)
        self.under_recorded_bytes = 0
        self.dropped_none = [0, 0]  # events, recorded bytes
        self.dropped_stage = {stage: [0, 0] for stage in STAGES}
        self.top = TopCounter(top_capacity)
        self.exposure = TopCounter(top_capacity)
        self.exposure_events = 0
        # Per stage: [events, approximate bytes] the policy would write in that stage, counted from
        # each request's final event — reported only when the input lacks the stage altogether.
        self.stage_gaps = {"RequestReceived": [0, 0], "ResponseStarted": [0, 0]}

    def rule_tally(self, rule: int | None) -> RuleTally:
        return self.rules[-1] if rule is None else self.rules[rule]

    @property
    def written_events(self) -> int:
        return sum(self.level_events.values())

    @property
    def written_bytes(self) -> int:
        return sum(self.level_bytes.values())


@dataclass
class InputTally:
    events: int = 0
    recorded_bytes: int = 0
    blank_lines: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    by_stage: dict[str, int] = field(default_factory=dict)
    by_recorded_level: dict[str, int] = field(default_factory=dict)


_scan = json.JSONDecoder().scan_once
REQUEST_CACHE_SIZE = 10_000


class _Request:
    """What every event of one request shape shares: the decisions, the source, the sensitivity."""

    __slots__ = ("decision", "base", "verb", "label", "sensitive", "long_running")

    def __init__(self, decision: Any, base: Any, verb: Any, label: str, sensitive: tuple[bool, bool] | None,
                 long_running: bool = False):
        self.decision = decision
        self.base = base
        # With the event's user name, (user, verb, label) is the key of the top-source and
        # level-change tables; the user is not part of the shape (see Simulation._request).
        self.verb = verb
        self.label = label
        self.sensitive = sensitive
        self.long_running = long_running


# Stands for every user name that no rule names: such names all get the same decisions.
_UNNAMED_USER = object()
# Stands in the key for the groups of an event whose user is missing or not an object.
_NOT_A_USER_OBJECT = object()


class Simulation:
    """Feed it lines (:meth:`feed`) or whole files (:meth:`run`); read the tallies afterwards.

    Per request shape — the user as the rules see it, verb and the object reference (its namespace
    and name only when some rule looks at them), or the URL path: a superset of what the evaluator
    reads — the decisions and labels are computed once and cached (at most ``REQUEST_CACHE_SIZE``
    shapes; the cache is emptied when full, which costs time, never correctness). The user as the
    rules see it is its name only if some rule lists that name, and only those of its groups that
    some rule lists: a log has thousands of users and group lists, the policies a handful.
    """

    def __init__(
        self,
        candidate: tuple[Policy, Decide],
        baseline: tuple[Policy, Decide] | None = None,
        *,
        sensitive: Iterable[tuple[str, str]] = (),
        top_capacity: int = 10_000,
        request_cache_size: int = REQUEST_CACHE_SIZE,
    ):
        self.input = InputTally()
        self.estimator = SizeEstimator()
        self.sensitive = sensitive_bodies(sensitive)
        self.candidate = PolicyTally(candidate[0], top_capacity)
        self.decide_candidate = candidate[1]
        self.baseline: PolicyTally | None = None
        self.decide_baseline: Decide | None = None
        self.level_changes = TopCounter(top_capacity)
        policies = [candidate[0]]
        if baseline is not None:
            self.baseline = PolicyTally(baseline[0], top_capacity)
            self.decide_baseline = baseline[1]
            policies.append(baseline[0])
        # Attributes no rule looks at stay out of the cache key, so fewer shapes need caching.
        # (Copied into attributes: they are read on every event.)
        use = AttributeUse.of(rule for p in policies for rule in p.rules)
        self._uses_names = use.names
        self._uses_namespaces = use.namespaces
        self._rule_users = use.users
        self._rule_groups = use.groups
        # group list (as a tuple) -> the groups of it some rule lists; bounded like the shapes
        self._group_classes: dict[tuple, frozenset | tuple] = {}
        self._requests: dict[tuple, _Request] = {}
        self.request_cache_size = request_cache_size
        self._where = ""
        self._line = 0

    def start_file(self, name: str) -> None:
        self.estimator.start_file()
        self._where = name
        self._line = 0

    def _malformed(self, message: str) -> None:
        self.input.malformed += 1
        if len(self.input.malformed_examples) < MALFORMED_EXAMPLES:
            self.input.malformed_examples.append(f"{self._where}:{self._line}: {message}")

    def _parse_slowly(self, content: bytes) -> Any:
        """The fast parse failed: a blank line, surrounding whitespace, or not JSON at all."""
        if not content.strip():
            self.input.blank_lines += 1
            return None
        try:
            return json.loads(content)
        except RecursionError:
            self._malformed("not JSON: nested too deeply")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            self._malformed(f"not JSON: {exc}")
        return None

    def _group_class(self, groups: tuple) -> frozenset | tuple:
        """The groups the rules can tell apart; a list that is not all strings stays as it is, so
        that the evaluator sees it (and rejects it) on a cache miss."""
        if any(group.__class__ is not str for group in groups):
            return groups
        # A frozenset caches its hash: the shape key holding it hashes faster on every lookup.
        known = frozenset(group for group in groups if group in self._rule_groups)
        if len(self._group_classes) >= self.request_cache_size:
            self._group_classes.clear()
        self._group_classes[groups] = known
        return known

    def _request(self, event: dict) -> tuple[str, _Request]:
        """(user name, the cached facts of the event's request shape); ValueError for an unusable event."""
        user = event.get("user")
        ref = event.get("objectRef")
        verb = event.get("verb")
        try:
            if user.__class__ is dict:
                groups = user.get("groups")
                username = user.get("username")
                if groups.__class__ is list:
                    groups = tuple(groups)
                    group_class = self._group_classes.get(groups)
                    if group_class is None:
                        group_class = self._group_class(groups)
                else:
                    group_class = groups
                # A name no rule lists decides like any other such name; a wrongly typed name stays
                # in the key, so the evaluator sees (and rejects) it on a miss.
                if username.__class__ is str and username not in self._rule_users:
                    user_class = _UNNAMED_USER
                else:
                    user_class = username
            else:  # no user, or not an object: the value itself, apart from every user object
                username, user_class, group_class = None, user, _NOT_A_USER_OBJECT
            # One flat tuple: a nested one would be hashed again on every lookup.
            if ref.__class__ is dict and ref.get("resource"):
                key = (user_class, group_class, verb, ref.get("resource"), ref.get("apiGroup"), ref.get("subresource"),
                       ref.get("namespace") if self._uses_namespaces else None,
                       ref.get("name") if self._uses_names else None)
            elif ref is None or ref.__class__ is dict:
                uri = event.get("requestURI")
                key = (user_class, group_class, verb, None, uri.partition("?")[0] if uri.__class__ is str else uri)
            else:
                key = None
            request = self._requests.get(key) if key is not None else None
        except TypeError:  # an unhashable value where a string belongs
            key = request = None
        if request is not None:
            return username if username.__class__ is str else "", request
        attributes = attributes_from_event(event)  # the engine's reading of an event; ValueError if unusable
        decision = self.decide_candidate(attributes)
        base = self.decide_baseline(attributes) if self.decide_baseline is not None else None
        sensitive = None
        if isinstance(ref, dict) and ref.get("resource"):
            resource = ref["resource"] + ("/" + ref["subresource"] if ref.get("subresource") else "")
            sensitive = self.sensitive.get((ref.get("apiGroup") or "", resource))
        request = _Request(decision, base, verb, resource_label(event), sensitive, is_long_running(event))
        if key is not None:
            if len(self._requests) >= self.request_cache_size:
                self._requests.clear()
            self._requests[key] = request
        return username if isinstance(username, str) else "", request

    def feed(self, line: bytes) -> None:
        self._line += 1
        content = line.rstrip(b"\r\n")
        try:
            text = content.decode()
            event, end = _scan(text, 0)
            if end != len(text):
                raise ValueError
        except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError is a ValueError
            event = self._parse_slowly(content)
            if event is None:
                return
        if event.__class__ is not dict:
            self._malformed("not a JSON object")
            return
        recorded = event.get("level")
        stage = event.get("stage")
        if (recorded.__class__ is not str or recorded not in LEVEL_RANK or recorded == "None"
                or stage.__class__ is not str or stage not in _STAGE_NAMES or "verb" not in event):
            self._malformed("not an audit Event (needs level, stage and verb)")
            return
        try:
            username, request = self._request(event)
        except ValueError as exc:
            self._malformed(str(exc))
            return
        if self.estimator.calibrating:
            self.estimator.calibrate(content, event)
        inp = self.input
        inp.events += 1
        recorded_bytes = len(content) + 1
        inp.recorded_bytes += recorded_bytes
        by_stage = inp.by_stage
        by_stage[stage] = by_stage.get(stage, 0) + 1
        by_level = inp.by_recorded_level
        by_level[recorded] = by_level.get(recorded, 0) + 1

        decision = request.decision
        source = (username, request.verb, request.label)
        size = self._account(self.candidate, decision, request, source, content, event, stage, recorded, recorded_bytes)
        base = request.base
        if base is not None:
            base_size = self._account(self.baseline, base, request, source, content, event, stage, recorded,
                                      recorded_bytes)
            if base.level != decision.level:
                self.level_changes.add(source + (base.level, decision.level), 1, extra=size - base_size)

    def _account(
        self, tally: PolicyTally, decision: Any, request: _Request, source: tuple[str, Any, str], content: bytes,
        event: dict, stage: str, recorded: str, recorded_bytes: int,
    ) -> int:
        """Tally one event under one policy; return the bytes that policy would write for it."""
        rule = tally.rules[-1 if decision.rule is None else decision.rule]
        rule.matched += 1
        level = decision.level
        if level == "None":
            tally.dropped_none[0] += 1
            tally.dropped_none[1] += recorded_bytes
            return 0
        if stage in decision.omit_stages:
            rule.omitted += 1
            dropped = tally.dropped_stage.setdefault(stage, [0, 0])
            dropped[0] += 1
            dropped[1] += recorded_bytes
            return 0
        rank = LEVEL_RANK[level]
        size = self.estimator.size(content, event, rank, level, decision.omit_managed_fields)
        rule.written += 1
        rule.bytes += size
        tally.level_events[level] += 1
        tally.level_bytes[level] += size
        recorded_rank = LEVEL_RANK[recorded]
        if recorded_rank < rank and bodies_missing(event, recorded_rank, rank):
            rule.under_recorded += 1
            tally.level_under[level] += 1
            tally.under_recorded_bytes += size
        if stage in BODY_STAGES:
            if "RequestReceived" not in decision.omit_stages:
                gap = tally.stage_gaps["RequestReceived"]
                gap[0] += 1
                gap[1] += self.estimator.request_received_size(content, event, level)
            if request.long_running and stage == "ResponseComplete" and "ResponseStarted" not in decision.omit_stages:
                gap = tally.stage_gaps["ResponseStarted"]
                gap[0] += 1
                gap[1] += self.estimator.response_started_size(content, event, level)
        tally.top.add(source, size)
        if request.sensitive is not None and rank >= RANK_REQUEST and stage in BODY_STAGES:
            self._exposure(tally, request, source, rank, level, event)
        return size

    @staticmethod
    def _exposure(tally: PolicyTally, request: _Request, source: tuple[str, Any, str], rank: int, level: str,
                  event: dict) -> None:
        user, verb, label = source
        request_sensitive, response_sensitive = request.sensitive
        bodies = []
        # The request body is logged whether or not the request succeeds; the response of a
        # failed one is a Status, which holds no object.
        if request_sensitive and verb in _REQUEST_BODY_VERBS:
            bodies.append("request")
        if response_sensitive and rank == RANK_REQUEST_RESPONSE and verb != "watch" and _succeeded(event):
            bodies.append("response")
        if bodies:
            tally.exposure_events += 1
            tally.exposure.add((label, verb, user, level, "+".join(bodies)), 1)

    def run(self, files: Iterable[tuple[InputFile, Iterable[list[bytes]]]]) -> None:
        """Feed every line of every file (as :func:`kaudit.simulate.inputs.iter_files` yields them).

        The cyclic garbage collector is paused meanwhile: parsed events are trees, freed by
        reference counting, and the collector's passes over them would cost about as much as the
        parsing itself. It is restored afterwards.
        """
        feed = self.feed
        collecting = gc.isenabled()
        gc.disable()
        try:
            for info, batches in files:
                self.start_file(info.name)
                for batch in batches:
                    for line in batch:
                        feed(line)
        finally:
            if collecting:
                gc.enable()
