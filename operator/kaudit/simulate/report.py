"""The simulation's outcome as a stable JSON document, and as a table or Markdown for people.

The JSON document (``kind: PolicySimulation``, ``version: 1``) is the contract: keys are only
ever added within a version; a change of meaning or a removal bumps ``version``. Its schema is
documented in docs/simulate.md. The table and Markdown views are rendered from that document,
never from the tallies directly, so the three outputs always agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kaudit.policy.model import PolicyRule, rule_to_dict
from kaudit.simulate.core import WRITTEN_LEVELS, PolicyTally, Simulation
from kaudit.simulate.inputs import InputFile

SCHEMA_VERSION = 1
KIND = "PolicySimulation"


@dataclass(frozen=True)
class PolicySource:
    """Where a simulated policy came from, for the report."""

    description: str  # "profile Default" or the file name
    hash: str  # content hash of the policy file (kaudit.policy.content_hash)


def rule_summary(rule: PolicyRule) -> str:
    """A one-line description of what a rule matches: ``users=[a] verbs=[get] resources=[secrets]``."""
    parts = []
    for key, value in rule_to_dict(rule).items():
        if key in ("level", "omitStages", "omitManagedFields"):
            continue
        if key == "resources":
            names = []
            for entry in value:
                group = entry.get("group", "")
                resources = entry.get("resources") or ["*"]
                for name in resources:
                    label = f"{name}.{group}" if group else name
                    if entry.get("resourceNames"):
                        label += "(" + ",".join(entry["resourceNames"]) + ")"
                    names.append(label)
            value = names
        parts.append(f"{key}=[{','.join(value)}]")
    return " ".join(parts) or "(everything)"


def _percent(new: int, old: int) -> float | None:
    return None if old == 0 else round((new - old) * 100.0 / old, 2)


def _change(old: int, new: int) -> dict[str, Any]:
    return {"baseline": old, "candidate": new, "change": new - old, "changePercent": _percent(new, old)}


def policy_report(tally: PolicyTally, source: PolicySource, top: int, input_stages: dict[str, int]) -> dict[str, Any]:
    rules = []
    for index, rule_tally in enumerate(tally.rules):
        is_default = index == len(tally.policy.rules)
        rule = None if is_default else tally.policy.rules[index]
        rules.append({
            "index": None if is_default else index,
            "level": "None" if rule is None else rule.level,
            "summary": "(no rule matched)" if rule is None else rule_summary(rule),
            "matchedEvents": rule_tally.matched,
            "writtenEvents": rule_tally.written,
            "omittedStageEvents": rule_tally.omitted,
            "bytes": rule_tally.bytes,
            "underRecordedEvents": rule_tally.under_recorded,
        })
    unrecorded: dict[str, Any] = {
        stage: {"events": events, "approximateBytes": approximate}
        for stage, (events, approximate) in tally.stage_gaps.items() if events and not input_stages.get(stage)
    }
    return {
        "source": source.description,
        "hash": source.hash,
        "totals": {
            "events": tally.written_events,
            "bytes": tally.written_bytes,
            "underRecordedEvents": sum(tally.level_under.values()),
            "underRecordedBytes": tally.under_recorded_bytes,
        },
        "levels": {
            level: {
                "events": tally.level_events[level],
                "bytes": tally.level_bytes[level],
                "underRecordedEvents": tally.level_under[level],
            }
            for level in WRITTEN_LEVELS
        },
        "dropped": {
            "levelNone": {"events": tally.dropped_none[0], "recordedBytes": tally.dropped_none[1]},
            "omittedStages": {
                stage: {"events": events, "recordedBytes": recorded}
                for stage, (events, recorded) in tally.dropped_stage.items() if events
            },
        },
        "rules": rules,
        "topSources": {
            "exact": tally.top.exact,
            "entries": [
                {"user": user, "verb": verb, "resource": resource, "events": events, "bytes": weight, "maxError": error}
                for (user, verb, resource), weight, events, error, _ in tally.top.top(top)
            ],
        },
        "exposure": {
            "events": tally.exposure_events,
            "entries": [
                {"resource": resource, "verb": verb, "user": user, "level": level, "bodies": bodies, "events": events}
                for (resource, verb, user, level, bodies), _, events, _, _ in tally.exposure.top(top)
            ],
        },
        "unrecordedStages": unrecorded,
    }


def _rule_identity(rule: PolicyRule) -> str:
    return json.dumps(rule_to_dict(rule), sort_keys=True)


def compare_rules(candidate: dict[str, Any], baseline: dict[str, Any], cand_tally: PolicyTally,
                  base_tally: PolicyTally) -> list[dict[str, Any]]:
    """Pair identical rules of the two policies (same content, in order) and compare their bytes."""
    by_identity: dict[str, list[int]] = {}
    for index, rule in enumerate(base_tally.policy.rules):
        by_identity.setdefault(_rule_identity(rule), []).append(index)
    rows = []
    paired: set[int] = set()
    for index, rule in enumerate(cand_tally.policy.rules):
        matches = by_identity.get(_rule_identity(rule))
        base_index = matches.pop(0) if matches else None
        if base_index is not None:
            paired.add(base_index)
        rows.append({
            "summary": candidate["rules"][index]["summary"],
            "level": rule.level,
            "candidateIndex": index,
            "baselineIndex": base_index,
            **_change(0 if base_index is None else baseline["rules"][base_index]["bytes"], candidate["rules"][index]["bytes"]),
        })
    for index, rule in enumerate(base_tally.policy.rules):
        if index not in paired:
            rows.append({
                "summary": baseline["rules"][index]["summary"],
                "level": rule.level,
                "candidateIndex": None,
                "baselineIndex": index,
                **_change(baseline["rules"][index]["bytes"], 0),
            })
    rows.append({
        "summary": "(no rule matched)", "level": "None", "candidateIndex": None, "baselineIndex": None,
        **_change(baseline["rules"][-1]["bytes"], candidate["rules"][-1]["bytes"]),
    })
    return rows


def build_report(
    sim: Simulation,
    files: list[InputFile],
    candidate: PolicySource,
    baseline: PolicySource | None = None,
    *,
    top: int = 20,
) -> dict[str, Any]:
    """The whole outcome as the version-1 JSON document."""
    inp = sim.input
    warnings = []
    if inp.events == 0:
        warnings.append("the input holds no audit events: every figure is zero")
    if inp.malformed:
        warnings.append(f"{inp.malformed} malformed line(s) skipped (see input.malformedExamples)")
    cand = policy_report(sim.candidate, candidate, top, inp.by_stage)
    doc: dict[str, Any] = {
        "kind": KIND,
        "version": SCHEMA_VERSION,
        "input": {
            "files": [
                {"name": f.name, "compressed": f.compressed, "lines": f.lines, "bytes": f.bytes_read} for f in files
            ],
            "events": inp.events,
            "recordedBytes": inp.recorded_bytes,
            "blankLines": inp.blank_lines,
            "malformedLines": inp.malformed,
            "malformedExamples": list(inp.malformed_examples),
            "eventsByStage": dict(sorted(inp.by_stage.items())),
            "eventsByRecordedLevel": dict(sorted(inp.by_recorded_level.items())),
        },
        "policy": cand,
        "baseline": None,
        "comparison": None,
        "warnings": warnings,
    }
    _policy_warnings(cand, "candidate", warnings)
    if baseline is not None and sim.baseline is not None:
        base = policy_report(sim.baseline, baseline, top, inp.by_stage)
        _policy_warnings(base, "baseline", warnings)
        doc["baseline"] = base
        doc["comparison"] = {
            "events": _change(base["totals"]["events"], cand["totals"]["events"]),
            "bytes": _change(base["totals"]["bytes"], cand["totals"]["bytes"]),
            "levels": {
                level: _change(base["levels"][level]["bytes"], cand["levels"][level]["bytes"]) for level in WRITTEN_LEVELS
            },
            "rules": compare_rules(cand, base, sim.candidate, sim.baseline),
            "exposureEvents": _change(base["exposure"]["events"], cand["exposure"]["events"]),
            "levelChanges": {
                "exact": sim.level_changes.exact,
                "entries": [
                    {
                        "user": user, "verb": verb, "resource": resource, "from": old, "to": new,
                        "events": events, "bytesChange": change, "maxError": error,
                    }
                    for (user, verb, resource, old, new), _, events, error, change in sim.level_changes.top(top)
                ],
            },
        }
    return doc


def _policy_warnings(report: dict[str, Any], which: str, warnings: list[str]) -> None:
    totals = report["totals"]
    if totals["underRecordedEvents"]:
        warnings.append(
            f"{which}: under-recorded: {totals['underRecordedEvents']} event(s) were recorded at a lower level than "
            f"this policy asks for (their bodies are missing); their {totals['underRecordedBytes']} bytes are a lower bound"
        )
    for stage, figures in report["unrecordedStages"].items():
        warnings.append(
            f"{which}: the input has no {stage} events (the recording policy omitted that stage), but this policy "
            f"writes them: about {figures['events']} more event(s), ~{figures['approximateBytes']} bytes, "
            "are not in the totals"
        )
    if report["exposure"]["events"]:
        warnings.append(
            f"{which}: exposure: {report['exposure']['events']} event(s) would log bodies of sensitive resources"
        )
