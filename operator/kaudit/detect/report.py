"""Coverage results as a versioned JSON document (``kind: DetectionCoverage``) and as a table.

The table is rendered from the document, so both always agree. Policy rule numbers are 0-based,
as in ``kaudit policy eval`` and ``kaudit policy simulate``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from kaudit.detect.coverage import BLIND, FIRES, PARTLY, UNRELATED, VERDICT_ORDER, RuleCoverage

SCHEMA_VERSION = 1
_FAIL_FROM = {"blind": (BLIND,), "partly-blind": (PARTLY, BLIND), "never": ()}


def failing(results: Iterable[RuleCoverage], fail_on: str) -> list[RuleCoverage]:
    return [r for r in results if r.required and r.verdict in _FAIL_FROM[fail_on]]


def coverage_document(results: list[RuleCoverage], policy: str) -> dict[str, Any]:
    counts = Counter(r.verdict for r in results)
    return {
        "kind": "DetectionCoverage", "version": SCHEMA_VERSION, "policy": policy,
        "summary": {v: counts.get(v, 0) for v in (FIRES, PARTLY, BLIND, UNRELATED)},
        "rules": [{
            "name": r.rule.name, "source": r.rule.source, "verdict": r.verdict, "required": r.required,
            "queries": [{
                "query": q.query, "verdict": q.verdict, "needs": q.needs, "reads": list(q.reads),
                "requests": q.targets,
                "blind": [{"rule": f.rule, "level": f.level, "reason": f.reason, "requests": f.count,
                           "examples": list(f.examples)} for f in q.blind],
                "recordedBy": [{"rule": rule, "level": level, "requests": n} for rule, level, n in q.recorded_by],
                "warnings": list(q.warnings),
            } for q in r.queries],
        } for r in results],
    }


def coverage_table(document: dict[str, Any]) -> str:
    lines = [f"Detection coverage under {document['policy']}"]
    summary = document["summary"]
    lines.append("  " + ", ".join(f"{n} {v}" for v, n in summary.items() if n or v != UNRELATED))
    lines.append(f"  {'verdict':<13} {'needs':<15} rule")
    ordered = sorted(document["rules"], key=lambda r: -VERDICT_ORDER.index(r["verdict"]))
    for rule in ordered:
        needs = max((q["needs"] for q in rule["queries"]), key=("Metadata", "Request", "RequestResponse").index)
        optional = "" if rule["required"] else " (optional)"
        lines.append(f"  {rule['verdict']:<13} {needs:<15} {rule['name']}{optional}")
        for q in rule["queries"]:
            for finding in q["blind"]:
                example = finding["examples"][0] if finding["examples"] else ""
                lines.append(f"      - {finding['reason']} ({finding['requests']} request shape(s), "
                             f"e.g. {example})")
            for warning in q["warnings"]:
                lines.append(f"      - warning: {warning}")
    return "\n".join(lines) + "\n"
