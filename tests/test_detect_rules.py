"""Detection rules as data: the Datadog API JSON and Terraform JSON loaders, rendering, `kaudit rules render`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from kaudit.cli import main
from kaudit.detect.loaders import load_rules_text
from kaudit.detect.model import NewValueOptions, Options, Query
from kaudit.detect.pack import PACK, pack_rules
from kaudit.detect.render import render_api, render_terraform
from kaudit.errors import InvalidInput

# A rule as the API documents a create payload (camelCase), with the read-only fields a GET adds.
API_RULE = {
    "id": "abc-123", "createdAt": 1700000000000, "isDefault": False, "version": 3,
    "name": "exec by a new user", "type": "log_detection", "isEnabled": True, "message": "m", "tags": ["team:sec"],
    "queries": [{"query": "source:kubernetes.audit @objectRef.subresource:exec", "aggregation": "new_value",
                 "groupByFields": [], "distinctFields": [], "metrics": ["@usr.name"], "name": "execs"}],
    "cases": [{"name": "", "status": "medium", "condition": "", "notifications": []}],
    "options": {"detectionMethod": "new_value", "evaluationWindow": 0, "keepAlive": 0, "maxSignalDuration": 0,
                "newValueOptions": {"forgetAfter": 28, "learningDuration": 7, "learningMethod": "duration",
                                    "learningThreshold": 0}},
}


def strip(rules):
    return [replace(rule, source="") for rule in rules]


def test_api_json_is_typed_data():
    (rule,) = load_rules_text(json.dumps(API_RULE), "r.json")
    assert rule.queries == (Query("source:kubernetes.audit @objectRef.subresource:exec", "execs", "new_value",
                                  (), (), ("@usr.name",)),)
    assert rule.options == Options("new_value", 0, 0, 0, NewValueOptions(28, 7, "duration", 0))
    assert rule.tags == ("team:sec",) and rule.source == "r.json"


def test_api_list_and_data_envelope_load_the_same_rules():
    one = load_rules_text(json.dumps(API_RULE), "a.json")
    listed = load_rules_text(json.dumps([API_RULE]), "b.json")
    enveloped = load_rules_text(json.dumps({"data": [{"id": "x", "type": "signal_rule", "attributes": API_RULE}]}),
                                "c.json")
    assert strip(one) == strip(listed) == strip(enveloped)


def test_terraform_json_blocks_as_object_or_list_and_escaped_templates():
    body = {"name": "exec", "message": "costs $${var} and %%{x}", "enabled": True,
            "query": {"query": "@objectRef.subresource:exec", "aggregation": "count", "group_by_fields": ["@usr.name"]},
            "case": [{"status": "high", "condition": "a > 0"}],
            "options": [{"evaluation_window": 300, "keep_alive": 300, "max_signal_duration": 600}]}
    (rule,) = load_rules_text(json.dumps({"resource": {"datadog_security_monitoring_rule": {"x": body}}}), "r.tf.json")
    assert rule.message == "costs ${var} and %{x}"
    assert rule.queries[0].group_by_fields == ("@usr.name",)
    assert rule.options.keep_alive == 300 and rule.source == "r.tf.json: resource.datadog_security_monitoring_rule.x"


@pytest.mark.parametrize("mutate, where, words", [
    (lambda r: r["options"].update(maxSignalDuration=120), "[0].options.maxSignalDuration", "supported values"),
    (lambda r: r["options"].update(keepAlive=30), "[0].options.keepAlive", "supported values"),
    (lambda r: r["options"]["newValueOptions"].update(forgetAfter=3), "[0].options.newValueOptions.forgetAfter",
     "supported values"),
    (lambda r: r["queries"][0].update(aggregation="median"), "[0].queries[0].aggregation", "supported values"),
    (lambda r: r["cases"][0].update(status="urgent"), "[0].cases[0].status", "supported values"),
    (lambda r: r["queries"][0].update(groupBy=["x"]), "[0].queries[0].groupBy", "unknown field"),
    (lambda r: r["queries"][0].update(query="@a:b and"), "[0].queries[0].query", "column 6"),
    (lambda r: r["queries"][0].pop("metrics"), "[0].queries[0].metrics", "needs the field"),
    (lambda r: r["cases"][0].update(condition="b > 0"), "[0].cases[0].condition", "not a query"),
    (lambda r: r.update(queries=[]), "[0].queries", "at least one"),
    (lambda r: r.update(isEnabled="yes"), "[0].isEnabled", "true or false"),
])
def test_bad_rule_names_file_and_field(mutate, where, words):
    rule = json.loads(json.dumps(API_RULE))
    mutate(rule)
    with pytest.raises(InvalidInput) as info:
        load_rules_text(json.dumps([rule]), "rules.json")
    (error,) = info.value.errors
    assert str(error).startswith(f"rules.json: {where}: ") and words in str(error)


def test_hcl_native_syntax_and_terraform_expressions_are_refused_with_one_line():
    with pytest.raises(InvalidInput) as info:
        load_rules_text('resource "datadog_security_monitoring_rule" "x" {}', "main.tf")
    assert [str(e) for e in info.value.errors] == [
        "main.tf: HCL native syntax is not read: give the rules in Terraform's JSON syntax (.tf.json) or as "
        "Datadog API JSON"]
    body = {"name": "${var.name}", "query": [{"query": "@a:b"}], "case": [{"status": "low"}]}
    with pytest.raises(InvalidInput) as info:
        load_rules_text(json.dumps({"resource": {"datadog_security_monitoring_rule": {"x": body}}}), "r.tf.json")
    assert "resource.datadog_security_monitoring_rule.x.name: is a Terraform expression" in str(info.value)


def test_not_json_names_line_and_column():
    with pytest.raises(InvalidInput) as info:
        load_rules_text('[\n {"name": }', "r.json")
    assert str(info.value.errors[0]).startswith("r.json:2:11: not JSON")


def test_rendered_pack_loads_back_into_the_same_rules_in_both_forms():
    rules = pack_rules()
    assert len(rules) == len(PACK) == len({r.name for r in rules})
    assert strip(load_rules_text(render_api(rules), "pack.json")) == strip(rules)
    assert strip(load_rules_text(render_terraform(rules), "pack.tf.json")) == strip(rules)


def test_render_cli_outputs_and_cluster_scope(capsys):
    assert main(["rules", "render", "-o", "terraform", "--cluster", "prod-eu"]) == 0
    document = json.loads(capsys.readouterr().out)
    resources = document["resource"]["datadog_security_monitoring_rule"]
    assert len(resources) == len(PACK)
    for body in resources.values():
        assert all(q["query"].startswith("kube_cluster_name:prod-eu source:kubernetes.audit ") for q in body["query"])
        assert body["name"].endswith(" [prod-eu]") and "kube_cluster_name:prod-eu" in body["tags"]
    assert main(["rules", "render"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == [e.rule["name"] for e in PACK]
    assert main(["rules", "render", "--cluster", "a b"]) == 1
    assert capsys.readouterr().err == "error: --cluster: letters, digits, '-', '_' and '.' only (a tag value)\n"
