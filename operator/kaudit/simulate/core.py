"""Replay audit events through one or two policies and tally what each would write.

The hot loop reads each batch of lines with the audit-event reader (:mod:`kaudit.auditlog`),
looks each request's shape up in a bounded cache (on a miss it asks the policy engine's evaluator
for each policy's decision) and adds the event to its *slot*: the events of one request shape,
stage and recorded level share every decision, so a slot keeps the sums of their measurements
(recorded bytes, the raw spans a level may remove: :func:`kaudit.simulate.sizes.measure`) and,
per user name, the events and the bytes each policy would write. Sizes are linear in the
measurements, so the totals are those of the event-by-event estimate. Slots become tallies
(:meth:`Simulation.flush`) when there are too many and at the end.

Every accumulator is bounded: the slots and their user entries (``SLOT_LIMIT``), the request
shapes (``REQUEST_CACHE_SIZE``), the per-rule and per-level tallies (fixed-size); the top-source,
exposure and level-change tables are :class:`TopCounter` instances.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Iterable, cast

from msgspec import UNSET

from kaudit.auditlog import (
    AuditEvent, MalformedEvent, ObjectRef, RequestAttributes, decode_lines, status_code,
)
from kaudit.policy.evaluate import AttributeUse
from kaudit.policy.model import LEVEL_RANK, LEVELS, STAGES, Policy
from kaudit.simulate.counters import TopCounter
from kaudit.simulate.inputs import InputFile
from kaudit.simulate.sizes import (
    BODY_STAGES, MEASURES, MF_REQUEST, MF_RESPONSE, N, RANK_REQUEST, RANK_REQUEST_RESPONSE, RECORDED,
    REQUEST_MEMBER, RESPONSE_MEMBER, STATUS_MEMBER, SizeEstimator, SizePlan, body_possible, measure, other_stage_sizes,
    planned_size, raw_managed_fields_len, size_plan,
)

MALFORMED_EXAMPLES = 5
# Only kube-apiserver's own stage names are accepted: the per-stage counts are keyed by stage, so
# arbitrary strings there would make them grow with the input.
_STAGE_NAMES = frozenset(STAGES)
WRITTEN_LEVELS = LEVELS[1:]
_RECORDED_LEVELS = frozenset(WRITTEN_LEVELS)
_REQUEST_BODY_VERBS = frozenset(("create", "update", "patch"))
# kube-apiserver's long-running requests (its LongRunningFunc): these verbs, and these subresources
# of any resource. Only they get a ResponseStarted event, one per request.
_LONG_RUNNING_VERBS = frozenset(("watch", "proxy"))
_LONG_RUNNING_SUBRESOURCES = frozenset(("attach", "exec", "proxy", "log", "portforward"))
_MANAGED_FIELDS_KEY = b'"managedFields":'
# What removing a top-level member takes out of a line besides its value: ',"KEY":'.
_REQUEST_OBJECT = len(',"requestObject":')
_RESPONSE_OBJECT = len(',"responseObject":')
_RESPONSE_STATUS = len(',"responseStatus":')
_NOT_AN_EVENT = "not an audit Event (needs level, stage and verb)"


# A policy's decision for a request's attributes (the policy engine's ``Evaluator.evaluate``): an
# object with ``level``, ``omit_stages``, ``omit_managed_fields`` and ``rule``.
Decide = Callable[[RequestAttributes], Any]


def resource_label(event: AuditEvent) -> str:
    """``pods``, ``deployments.apps/scale``, or the non-resource path (``/healthz``)."""
    ref = event.objectRef
    if ref is not None and ref.resource:
        label = ref.resource
        if ref.apiGroup:
            label = f"{label}.{ref.apiGroup}"
        if ref.subresource:
            label = f"{label}/{ref.subresource}"
        return label
    return (event.requestURI or "").split("?", 1)[0]


def sensitive_bodies(catalog: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(apiGroup, resource[/subresource]) -> (request body sensitive, response body sensitive).

    Every listed resource is sensitive both ways, except the TokenRequest: its request only names
    audiences, its response is the token.
    """
    table = {entry: (True, True) for entry in catalog}
    if ("", "serviceaccounts/token") in table:
        table[("", "serviceaccounts/token")] = (False, True)
    return table


def succeeded(event: AuditEvent) -> bool:
    """Whether the response carried an object rather than an error Status (no code: assume so)."""
    code = status_code(event)
    return not isinstance(code, int) or isinstance(code, bool) or code < 300


def is_long_running(event: AuditEvent) -> bool:
    ref = event.objectRef
    subresource = ref.subresource if ref is not None and ref.resource else None
    return event.verb in _LONG_RUNNING_VERBS or subresource in _LONG_RUNNING_SUBRESOURCES


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


REQUEST_CACHE_SIZE = 10_000
# Slots, and user entries in all slots, held before they are turned into the tallies.
SLOT_LIMIT = 20_000


class _Request:
    """What every event of one request shape shares: the decisions, the source, the sensitivity."""

    __slots__ = ("decision", "base", "verb", "label", "sensitive", "long_running", "ref")

    def __init__(self, decision: Any, base: Any, verb: Any, label: str, sensitive: tuple[bool, bool] | None,
                 long_running: bool, ref: ObjectRef | None):
        self.decision = decision
        self.base = base
        # With the event's user name, (user, verb, label) is the key of the top-source and
        # level-change tables; the user is not part of the shape (see RequestKeys).
        self.verb = verb
        self.label = label
        self.sensitive = sensitive
        self.long_running = long_running
        self.ref = ref


_INVALID = object()  # the slot of events that are not audit events (bad level, stage or verb)


def _plan(decision: Any, stage: str, recorded: str, patch: bool) -> SizePlan | None:
    """How one policy's written size of the events of a slot follows from their measurements
    (:func:`kaudit.simulate.sizes.size_plan`); None when the policy writes nothing (level None,
    or the stage omitted)."""
    if decision.level == "None" or stage in decision.omit_stages:
        return None
    return size_plan(decision.level, recorded, decision.omit_managed_fields, patch)


class _Slot:
    """The events of one request shape, stage and recorded level (and, for a sensitive resource,
    success): they share every decision. Keeps, per user name, the sums of their measurements
    (:func:`kaudit.simulate.sizes.measure`): the tables by user need them per user, the per-rule
    and per-level tallies their total."""

    __slots__ = ("request", "stage", "recorded", "success", "users", "plan", "base_plan",
                 "request_fields", "response_fields")

    def __init__(self, request: _Request, stage: str, recorded: str, success: bool):
        self.request = request
        self.stage = stage
        self.recorded = recorded
        self.success = success
        self.users: dict[Any, list[int]] = {}  # user name (None: no user) -> sums of measurements
        patch = request.verb == "patch"
        self.plan = _plan(request.decision, stage, recorded, patch)
        self.base_plan = None if request.base is None else _plan(request.base, stage, recorded, patch)
        # managedFields are measured only where a policy strips them from a body it writes.
        self.request_fields = any(p is not None and p[3] for p in (self.plan, self.base_plan))
        self.response_fields = any(p is not None and p[4] for p in (self.plan, self.base_plan))

    def sums(self) -> list[int]:
        """The sums of the measurements of all its events."""
        return [sum(column) for column in zip(*self.users.values())]

    def sizes(self, plan: SizePlan | None) -> list[tuple[Any, int, int]]:
        """(user name, events, bytes written under ``plan``) per user."""
        return [(user, sums[N], 0 if plan is None else planned_size(sums, plan)) for user, sums in self.users.items()]


class Simulation:
    """Feed it batches of lines (:meth:`feed`) or whole files (:meth:`run`), then :meth:`flush`;
    read the tallies afterwards.

    Per request shape (:class:`kaudit.auditlog.RequestKeys`: the user as the rules see it, verb,
    the object reference as the rules see it, or the URL path) the decisions and labels are
    computed once and cached (at most ``request_cache_size`` shapes; the cache is emptied when
    full, which costs time, never correctness).
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
        # Attributes no rule of either policy looks at stay out of the key, so fewer shapes need caching.
        self.requests = AttributeUse.of(rule for p in policies for rule in p.rules).keys(
            self._new_request, request_cache_size)
        self._slots: dict[tuple[Any, ...], Any] = {}
        self._slot_users = 0  # user entries in all slots: the slots are flushed when there are too many
        self._where = ""
        self._line = 0

    def start_file(self, name: str) -> None:
        self.estimator.start_file()
        self._where = name
        self._line = 0

    def _malformed(self, line_number: int, message: str) -> None:
        self.input.malformed += 1
        if len(self.input.malformed_examples) < MALFORMED_EXAMPLES:
            self.input.malformed_examples.append(f"{self._where}:{line_number}: {message}")

    def _new_request(self, event: AuditEvent, attributes: RequestAttributes) -> _Request:
        decision = self.decide_candidate(attributes)
        base = self.decide_baseline(attributes) if self.decide_baseline is not None else None
        sensitive = None
        ref = event.objectRef
        if ref is not None and ref.resource:
            resource = ref.resource + ("/" + ref.subresource if ref.subresource else "")
            sensitive = self.sensitive.get((ref.apiGroup or "", resource))
        return _Request(decision, base, event.verb, resource_label(event), sensitive, is_long_running(event), ref)

    def _slot(self, key: tuple[Any, ...]) -> Any:
        """A new slot, or ``_INVALID`` when its events are not audit events."""
        request, stage, recorded = key[:3]
        if (recorded.__class__ is not str or recorded not in _RECORDED_LEVELS or stage.__class__ is not str
                or stage not in _STAGE_NAMES or request.verb is UNSET):
            return _INVALID
        if len(self._slots) >= SLOT_LIMIT:
            self.flush()
        slot = self._slots[key] = _Slot(request, stage, recorded, key[3] if len(key) > 3 else True)
        return slot

    @staticmethod
    def _key(event: AuditEvent, request: _Request) -> tuple[Any, ...]:
        key: tuple[Any, ...] = (request, event.stage, event.level)
        if request.sensitive is not None:  # the exposure of a response body depends on its success
            key += (succeeded(event),)
        return key

    def feed(self, lines: list[bytes]) -> None:
        """Count one batch of lines of the current file."""
        events, malformed = decode_lines(lines)
        requests = self.requests.values(events)
        first = self._line
        self._line += len(lines)
        if malformed or self.estimator.calibrating or self.estimator.reserialize or not _plain_lines(lines):
            self._feed_slowly(first, lines, events, requests)
            return
        slots, slot_of = self._slots, self._slot
        new_users = 0
        key: tuple[Any, ...]
        # No MalformedEvent in the batch (malformed is empty).
        typed = cast("list[AuditEvent]", events)
        for number, line, event, request in zip(range(first + 1, self._line + 1), lines, typed, requests):
            # Inlined _key and sizes.measure: this runs once per event, for compact lines that each
            # end in exactly one newline.
            key = (request, event.stage, event.level)
            if request.sensitive is not None:
                key += (succeeded(event),)
            try:
                slot = slots.get(key)
            except TypeError:  # an unhashable level or stage: not an audit event
                slot = _INVALID
            if slot is None:
                slot = slot_of(key)
            if slot is _INVALID:
                self._malformed(number, _NOT_AN_EVENT)
                continue
            info = event.user
            username = info.username if info is not None else None
            sums = slot.users.get(username)
            if sums is None:
                sums = slot.users[username] = [0] * MEASURES
                new_users += 1
            sums[N] += 1
            sums[RECORDED] += len(line)
            size = len(event.responseStatus)
            if size:
                sums[STATUS_MEMBER] += _RESPONSE_STATUS + size
            size = len(event.requestObject)
            if size:
                sums[REQUEST_MEMBER] += _REQUEST_OBJECT + size
                if slot.request_fields and _MANAGED_FIELDS_KEY in line:
                    sums[MF_REQUEST] += raw_managed_fields_len(event.requestObject)
            size = len(event.responseObject)
            if size:
                sums[RESPONSE_MEMBER] += _RESPONSE_OBJECT + size
                if slot.response_fields and _MANAGED_FIELDS_KEY in line:
                    sums[MF_RESPONSE] += raw_managed_fields_len(event.responseObject)
        self._slot_users += new_users
        if self._slot_users >= SLOT_LIMIT:
            self.flush()

    def _feed_slowly(self, first: int, lines: list[bytes], events: list[AuditEvent | MalformedEvent],
                     requests: list[Any]) -> None:
        """One event at a time: a batch with malformed or blank lines, lines with a carriage return
        or without a newline, or a file's first lines (calibration) or a file of re-encoded lines."""
        for number, line, event, request in zip(range(first + 1, first + len(lines) + 1), lines, events, requests):
            if isinstance(event, MalformedEvent):
                if event.kind == "blank":
                    self.input.blank_lines += 1
                elif event.kind == "json":
                    self._malformed(number, f"not JSON: {event}")
                elif event.kind == "object":
                    self._malformed(number, "not a JSON object")
                else:
                    self._malformed(number, str(event))
                continue
            try:
                key = self._key(event, request)
                slot = self._slots.get(key)
            except TypeError:
                slot = _INVALID
            if slot is None:
                slot = self._slot(key)
            if slot is _INVALID:
                self._malformed(number, _NOT_AN_EVENT)
                continue
            content = line.rstrip(b"\r\n")
            if self.estimator.calibrating:
                self.estimator.calibrate(content)
            measured = measure(content, event, slot.request_fields, slot.response_fields,
                               self.estimator.reserialize)
            username = event.user.username if event.user is not None else None
            sums = slot.users.get(username)
            if sums is None:
                sums = slot.users[username] = [0] * MEASURES
                self._slot_users += 1
            for index in range(MEASURES):
                sums[index] += measured[index]

    def flush(self) -> None:
        """Turn the slots into the tallies."""
        for slot in self._slots.values():
            self._tally_slot(slot)
        self._slots.clear()
        self._slot_users = 0

    def _tally_slot(self, slot: _Slot) -> None:
        inp = self.input
        sums = slot.sums()
        events = sums[N]
        inp.events += events
        inp.recorded_bytes += sums[RECORDED]
        inp.by_stage[slot.stage] = inp.by_stage.get(slot.stage, 0) + events
        inp.by_recorded_level[slot.recorded] = inp.by_recorded_level.get(slot.recorded, 0) + events
        request = slot.request
        sizes = slot.sizes(slot.plan)
        self._account(self.candidate, request.decision, slot, sums, sizes)
        base, baseline = request.base, self.baseline
        if base is not None and baseline is not None:
            base_sizes = slot.sizes(slot.base_plan)
            self._account(baseline, base, slot, sums, base_sizes)
            if base.level != request.decision.level:
                for (username, count, size), (_, _, base_size) in zip(sizes, base_sizes):
                    source = (username if username.__class__ is str else "", request.verb, request.label)
                    self.level_changes.add(source + (base.level, request.decision.level), count, count,
                                           extra=size - base_size)

    def _account(self, tally: PolicyTally, decision: Any, slot: _Slot, sums: list[int],
                 sizes: list[tuple[Any, int, int]]) -> None:
        """Tally one slot under one policy, given its sums and (user, events, bytes) per user."""
        stage, request = slot.stage, slot.request
        events = sums[N]
        rule = tally.rules[-1 if decision.rule is None else decision.rule]
        rule.matched += events
        level = decision.level
        if level == "None":
            tally.dropped_none[0] += events
            tally.dropped_none[1] += sums[RECORDED]
            return
        if stage in decision.omit_stages:
            rule.omitted += events
            dropped = tally.dropped_stage.setdefault(stage, [0, 0])
            dropped[0] += events
            dropped[1] += sums[RECORDED]
            return
        rank = LEVEL_RANK[level]
        size = 0
        for username, count, written in sizes:
            size += written
            tally.top.add((username if username.__class__ is str else "", request.verb, request.label), written, count)
        rule.written += events
        rule.bytes += size
        tally.level_events[level] += events
        tally.level_bytes[level] += size
        recorded_rank = LEVEL_RANK[slot.recorded]
        if recorded_rank < rank and stage in BODY_STAGES and body_possible(request.ref, request.verb, rank,
                                                                            recorded_rank):
            rule.under_recorded += events
            tally.level_under[level] += events
            tally.under_recorded_bytes += size
        if stage in BODY_STAGES:
            received, started = other_stage_sizes(sums, level, slot.recorded, stage)
            if "RequestReceived" not in decision.omit_stages:
                gap = tally.stage_gaps["RequestReceived"]
                gap[0] += events
                gap[1] += received
            if request.long_running and stage == "ResponseComplete" and "ResponseStarted" not in decision.omit_stages:
                gap = tally.stage_gaps["ResponseStarted"]
                gap[0] += events
                gap[1] += started
        if request.sensitive is not None and rank >= RANK_REQUEST and stage in BODY_STAGES:
            self._exposure(tally, slot, rank, level, sizes)

    @staticmethod
    def _exposure(tally: PolicyTally, slot: _Slot, rank: int, level: str, sizes: list[tuple[Any, int, int]]) -> None:
        request = slot.request
        verb = request.verb
        if request.sensitive is None:
            return
        request_sensitive, response_sensitive = request.sensitive
        bodies = []
        # The request body is logged whether or not the request succeeds; the response of a
        # failed one is a Status, which holds no object.
        if request_sensitive and verb in _REQUEST_BODY_VERBS:
            bodies.append("request")
        if response_sensitive and rank == RANK_REQUEST_RESPONSE and verb != "watch" and slot.success:
            bodies.append("response")
        if bodies:
            for username, count, _ in sizes:
                tally.exposure_events += count
                tally.exposure.add((request.label, verb, username if username.__class__ is str else "", level,
                                    "+".join(bodies)), count, count)

    def run(self, files: Iterable[tuple[InputFile, Iterable[list[bytes]]]]) -> None:
        """Feed every batch of every file (as :func:`kaudit.simulate.inputs.iter_files` yields
        them), then :meth:`flush`.

        The cyclic garbage collector is paused meanwhile: the events and keys are freed by
        reference counting, and the collector's passes over the caches would cost about as much as
        the reading itself. It is restored afterwards.
        """
        feed = self.feed
        collecting = gc.isenabled()
        gc.disable()
        try:
            for info, batches in files:
                self.start_file(info.name)
                for batch in batches:
                    feed(batch)
            self.flush()
        finally:
            if collecting:
                gc.enable()


def _plain_lines(lines: list[bytes]) -> bool:
    """Whether every line ends with a newline and none with a carriage return: then a line's
    recorded bytes are its length."""
    return lines[-1].endswith(b"\n") and not any(map(bytes.endswith, lines, repeat(b"\r\n")))
