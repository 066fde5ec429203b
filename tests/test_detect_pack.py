"""The built-in pack: each rule fires on its example and not on its twin, at the level it declares;
the offline signal runner's threshold and new-value semantics."""

from __future__ import annotations

import copy
import re

import pytest

from kaudit.detect.pack import PACK, event, pack_rules
from kaudit.detect.signals import run_rule
from kaudit.policy.model import LEVEL_RANK

RULES = dict(zip((entry.id for entry in PACK), pack_rules()))
IDS = [entry.id for entry in PACK]


def cut(events, level: str):
    """The events as kube-apiserver writes them at ``level``: bodies above it left out."""
    out = []
    for e in copy.deepcopy(list(events)):
        e["level"] = level
        if LEVEL_RANK[level] < LEVEL_RANK["Request"]:
            e.pop("requestObject", None)
        if LEVEL_RANK[level] < LEVEL_RANK["RequestResponse"]:
            e.pop("responseObject", None)
        out.append(e)
    return out


@pytest.mark.parametrize("entry", PACK, ids=IDS)
def test_fires_on_its_example_and_not_on_its_twin(entry):
    rule = RULES[entry.id]
    assert [s.status for s in run_rule(rule, entry.fires)] == [entry.rule["cases"][0]["status"]]
    assert run_rule(rule, entry.twin) == []


@pytest.mark.parametrize("entry", PACK, ids=IDS)
def test_declared_level_is_the_one_its_fields_need(entry):
    # Read from the query text itself: bodies start at Request (requestObject) and RequestResponse
    # (responseObject); every other field is in every event from Metadata on.
    text = " ".join(q["query"] for q in entry.rule["queries"])
    derived = ("RequestResponse" if "@responseObject." in text else
               "Request" if "@requestObject." in text else "Metadata")
    assert entry.needs == derived
    rule = RULES[entry.id]
    assert run_rule(rule, cut(entry.fires, entry.needs)), "fires at the level it declares"
    lower = [level for level in ("Metadata", "Request") if LEVEL_RANK[level] < LEVEL_RANK[entry.needs]]
    for level in lower:
        assert run_rule(rule, cut(entry.fires, level)) == [], f"cannot fire at {level}"


def test_exec_and_attach_match_both_verbs_kubectl_sends():
    # kubectl tries a WebSocket upgrade (GET: verb get) and falls back to SPDY (POST: verb create);
    # the real-cluster suite shows both events.
    for entry_id, sub in (("kaudit-pod-exec", "exec"), ("kaudit-pod-attach", "attach")):
        for verb in ("get", "create"):
            e = event(verb, "pods", subresource=sub, namespace="a", name="p", code=101)
            assert run_rule(RULES[entry_id], [e])
        assert not run_rule(RULES[entry_id], [event("create", "pods", subresource=sub, namespace="a", name="p",
                                                    code=500)])


def test_threshold_counts_per_group_within_the_window_and_keeps_one_signal_open():
    rule = RULES["kaudit-denied-burst"]
    slow = [dict(e, requestReceivedTimestamp=f"2026-01-05T10:{i:02d}:00Z") for i, e in
            enumerate(PACK[IDS.index("kaudit-denied-burst")].fires)]
    assert run_rule(rule, slow[:11]) == []  # 11 denials over 10 minutes: never 11 in 5 minutes
    burst = [event("get", "secrets", namespace="a", user="m", code=403, time=f"2026-01-05T10:00:{i:02d}Z")
             for i in range(30)]
    signals = run_rule(rule, burst)
    assert len(signals) == 1 and signals[0].group == ("m",)  # the 12th..30th keep the signal open


def test_new_value_learns_for_its_learning_duration_then_signals_each_new_value_once():
    rule = RULES["kaudit-secret-read-new-identity"]

    def read(user, day):
        return event("get", "secrets", namespace="a", name="s", user=user, time=f"2026-01-{day:02d}T09:00:00Z")

    learning = [read("a", 1), read("b", 3), read("c", 7)]  # within the 7 learning days
    signals = run_rule(rule, learning + [read("b", 9), read("d", 9), read("d", 10), read("e", 11)])
    assert [s.value for s in signals] == ["d", "e"]
