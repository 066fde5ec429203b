"""Rules back to the forms Datadog takes: API JSON (create payloads) and Terraform JSON syntax.

Both are rendered from :class:`kaudit.detect.model.Rule`, so a rendered file loads back into the
same rules (the tests check the round trip). ``cluster`` scopes every query to one cluster's logs
(``kube_cluster_name:NAME``, the tag the Datadog Agent puts on them) and names and tags the rule
after it, so a fleet sharing one organisation keeps one rule per cluster apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Iterable

from kaudit.detect.loaders import TERRAFORM_TYPE
from kaudit.detect.model import Query, Rule

CLUSTER_TAG = "kube_cluster_name"


def for_cluster(rule: Rule, cluster: str) -> Rule:
    if not cluster:
        return rule
    queries = tuple(replace(q, query=f"{CLUSTER_TAG}:{cluster} {q.query}") for q in rule.queries)
    return replace(rule, name=f"{rule.name} [{cluster}]", queries=queries,
                   tags=rule.tags + (f"{CLUSTER_TAG}:{cluster}",))


def _query_api(query: Query) -> dict[str, Any]:
    out = {"query": query.query, "aggregation": query.aggregation,
           "groupByFields": list(query.group_by_fields), "distinctFields": list(query.distinct_fields)}
    if query.metrics:
        out["metrics"] = list(query.metrics)
    if query.name:
        out["name"] = query.name
    return out


def rule_to_api(rule: Rule) -> dict[str, Any]:
    options = rule.options
    out_options: dict[str, Any] = {"detectionMethod": options.detection_method, "evaluationWindow": options.evaluation_window,
                         "keepAlive": options.keep_alive, "maxSignalDuration": options.max_signal_duration}
    if options.new_value_options:
        nvo = options.new_value_options
        out_options["newValueOptions"] = {"forgetAfter": nvo.forget_after, "learningDuration": nvo.learning_duration,
                                          "learningMethod": nvo.learning_method,
                                          "learningThreshold": nvo.learning_threshold}
    return {
        "name": rule.name, "type": rule.type, "isEnabled": rule.enabled, "message": rule.message,
        "tags": list(rule.tags), "queries": [_query_api(q) for q in rule.queries],
        "cases": [{"name": c.name, "status": c.status, "condition": c.condition} for c in rule.cases],
        "options": out_options,
    }


def _snake(data: Any) -> Any:
    """Terraform's key names; literal "${" and "%{" escaped, as Terraform JSON reads them as templates."""
    if isinstance(data, str):
        return data.replace("${", "$${").replace("%{", "%%{")
    if isinstance(data, dict):
        return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): _snake(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_snake(v) for v in data]
    return data


def terraform_label(rule: Rule) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", rule.name.lower()).strip("_") or "rule"


def rule_to_terraform(rule: Rule) -> dict[str, Any]:
    api = rule_to_api(rule)
    body: dict[str, Any] = _snake({k: v for k, v in api.items() if k not in ("isEnabled", "queries", "cases")})
    body["enabled"] = api["isEnabled"]
    body["query"] = _snake(api["queries"])
    body["case"] = _snake(api["cases"])
    return body


def render_api(rules: Iterable[Rule]) -> str:
    return json.dumps([rule_to_api(rule) for rule in rules], indent=2) + "\n"


def render_terraform(rules: Iterable[Rule]) -> str:
    resources: dict[str, Any] = {}
    for rule in rules:
        label = terraform_label(rule)
        while label in resources:
            label += "_"
        resources[label] = rule_to_terraform(rule)
    return json.dumps({"resource": {TERRAFORM_TYPE: resources}}, indent=2) + "\n"
