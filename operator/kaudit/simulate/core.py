"""Replay audit events through one or two policies and tally what each would write.

The hot loop parses each line once (``json.loads``), asks the policy engine's evaluator for the
decision (it caches decisions keyed by the attributes the policy looks at), and estimates the written size from the line
(:mod:`kaudit.simulate.sizes`). Every accumulator is bounded: per-rule and per-level tallies are
fixed-size, the top-source, exposure and level-change tables are :class:`TopCounter` instances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from kaudit.policy.model import LEVEL_RANK, LEVELS, STAGES, Policy
from kaudit.simulate.counters import TopCounter
from kaudit.simulate.inputs import InputFile
from kaudit.simulate.sizes import (
    BODY_STAGES, RANK_REQUEST, RANK_REQUEST_RESPONSE, SizeEstimator, bodies_missing,
)

MALFORMED_EXAMPLES = 5
WRITTEN_LEVELS = LEVELS[1:]
_REQUEST_BODY_VERBS = frozenset(("create", "update", "patch"))


# A function from an audit Event (dict) to the policy's decision for its request (an object with
# ``level``, ``omit_stages``, ``omit_managed_fields`` and ``rule``, as the policy engine's
# ``Evaluator.evaluate_event`` returns); raises ValueError for an event it cannot evaluate.
Decide = Callable[[dict], Any]


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


class RuleTally:
    __slots__ = ("matched", "written", "omitted", "bytes", "under_recorded", "gap_events", "gap_bytes")

    def __init__(self) -> None:
        self.matched = self.written = self.omitted = self.bytes = self.under_recorded = 0
        # Final-stage events whose RequestReceived event the policy would also write.
        self.gap_events = self.gap_bytes = 0


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


def _username(event: dict) -> str:
    user = event.get("user")
    name = user.get("username") if isinstance(user, dict) else None
    return name if isinstance(name, str) else ""


class Simulation:
    """Feed it lines (:meth:`feed`); read the tallies afterwards."""

    def __init__(
        self,
        candidate: tuple[Policy, Decide],
        baseline: tuple[Policy, Decide] | None = None,
        *,
        sensitive: Iterable[tuple[str, str]] = (),
        top_capacity: int = 10_000,
    ):
        self.input = InputTally()
        self.estimator = SizeEstimator()
        self.sensitive = sensitive_bodies(sensitive)
        self.candidate = PolicyTally(candidate[0], top_capacity)
        self.decide_candidate = candidate[1]
        self.baseline: PolicyTally | None = None
        self.level_changes = TopCounter(top_capacity)
        if baseline is not None:
            self.baseline = PolicyTally(baseline[0], top_capacity)
            self.decide_baseline = baseline[1]
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

    def feed(self, line: bytes) -> None:
        self._line += 1
        content = line.rstrip(b"\r\n")
        if not content.strip():
            self.input.blank_lines += 1
            return
        try:
            event = json.loads(content)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            self._malformed(f"not JSON: {exc}")
            return
        if not isinstance(event, dict):
            self._malformed("not a JSON object")
            return
        recorded = event.get("level")
        stage = event.get("stage")
        if recorded not in LEVEL_RANK or recorded == "None" or not isinstance(stage, str) or "verb" not in event:
            self._malformed("not an audit Event (needs level, stage and verb)")
            return
        try:
            decision = self.decide_candidate(event)
            base = self.decide_baseline(event) if self.baseline is not None else None
        except ValueError as exc:
            self._malformed(str(exc))
            return
        self.estimator.calibrate(content, event)
        inp = self.input
        inp.events += 1
        recorded_bytes = len(content) + 1
        inp.recorded_bytes += recorded_bytes
        inp.by_stage[stage] = inp.by_stage.get(stage, 0) + 1
        inp.by_recorded_level[recorded] = inp.by_recorded_level.get(recorded, 0) + 1

        source = (_username(event), event["verb"], resource_label(event))
        size = self._account(self.candidate, decision, content, event, stage, recorded, recorded_bytes, source)
        if base is not None:
            base_size = self._account(self.baseline, base, content, event, stage, recorded, recorded_bytes, source)
            if base.level != decision.level:
                self.level_changes.add(source + (base.level, decision.level), 1, extra=size - base_size)

    def _account(
        self, tally: PolicyTally, decision: Decision, content: bytes, event: dict, stage: str,
        recorded: str, recorded_bytes: int, source: tuple[str, str, str],
    ) -> int:
        """Tally one event under one policy; return the bytes that policy would write for it."""
        rule = tally.rule_tally(decision.rule)
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
        if stage in BODY_STAGES and "RequestReceived" not in decision.omit_stages:
            rule.gap_events += 1
            rule.gap_bytes += self.estimator.request_received_size(content, event, level)
        tally.top.add(source, size)
        if rank >= RANK_REQUEST and self.sensitive:
            self._exposure(tally, event, stage, rank, level, source)
        return size

    def _exposure(
        self, tally: PolicyTally, event: dict, stage: str, rank: int, level: str, source: tuple[str, str, str],
    ) -> None:
        ref = event.get("objectRef")
        if not isinstance(ref, dict) or not ref.get("resource") or stage not in BODY_STAGES:
            return
        resource = ref["resource"] + ("/" + ref["subresource"] if ref.get("subresource") else "")
        sensitive = self.sensitive.get((ref.get("apiGroup", ""), resource))
        if sensitive is None:
            return
        verb = event.get("verb")
        bodies = []
        if sensitive[0] and verb in _REQUEST_BODY_VERBS:
            bodies.append("request")
        if sensitive[1] and rank == RANK_REQUEST_RESPONSE and verb != "watch":
            bodies.append("response")
        if bodies:
            tally.exposure_events += 1
            tally.exposure.add((source[2], verb, source[0], level, "+".join(bodies)), 1)

    def run(self, files: Iterable[tuple[InputFile, Iterable[bytes]]]) -> None:
        """Feed every line of every file (as :func:`kaudit.simulate.inputs.iter_files` yields them)."""
        feed = self.feed
        for info, lines in files:
            self.start_file(info.name)
            for line in lines:
                feed(line)
