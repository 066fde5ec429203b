"""Lints: what kube-apiserver accepts silently but is probably a mistake."""

from __future__ import annotations

import pytest

from kaudit.policy import lint_policy, load_policy

HEAD = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"

# The example policy of the Datadog integration page (reference 004), as printed there: the pods
# rule has `verbs` inside its resources entry.
DATADOG_PAGE_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    nonResourceURLs: ['/healthz*', '/logs', '/metrics', '/swagger*', '/version']
  - level: Metadata
    omitStages: [RequestReceived]
    resources:
      - group: authentication.k8s.io
        resources: [tokenreviews]
  - level: RequestResponse
    omitStages: [RequestReceived]
    resources:
      - group: authorization.k8s.io
        resources: [subjectaccessreviews]
  - level: RequestResponse
    omitStages: [RequestReceived]
    resources:
      - group: ''
        resources: ['pods']
        verbs: ['create', 'patch', 'update', 'delete']
  - level: Metadata
    omitStages: [RequestReceived]
"""


def lint(text: str, version: str = "") -> dict[str, str]:
    result = load_policy(text, version)
    assert result.ok, result.errors
    return {w.path: w.message for w in lint_policy(result.policy, unknown_fields=result.unknown_fields,
                                                   duplicate_fields=result.duplicate_fields,
                                                   kubernetes_version=version)}


def test_datadog_page_nested_verbs_is_caught():
    warnings = lint(DATADOG_PAGE_POLICY)
    assert "rules[3].resources[0].verbs" in warnings
    assert "belongs on the rule" in warnings["rules[3].resources[0].verbs"]


def test_misspelt_field_gets_a_suggestion():
    warnings = lint(HEAD + "rules:\n- level: None\n  namespace: [kube-system]\n- level: Metadata\n")
    assert 'did you mean "namespaces"' in warnings["rules[0].namespace"]


@pytest.mark.parametrize("verb, suggestion", [("Create", "create"), ("gets", "get"), ("lists", "list")])
def test_verbs_that_are_not_kubernetes_verbs(verb, suggestion):
    warnings = lint(HEAD + f"rules:\n- {{level: None, verbs: [get, {verb}]}}\n- level: Metadata\n")
    assert f'did you mean "{suggestion}"' in warnings["rules[0].verbs[1]"]
    assert "rules[0].verbs[0]" not in warnings


def test_unknown_resource_in_builtin_group():
    warnings = lint(HEAD + "rules:\n- level: None\n  resources:\n  - {group: '', resources: [pod, pods/log, nodes/*]}\n"
                           "  - {group: apps, resources: [deployment]}\n  - {group: example.com, resources: [widget]}\n"
                           "- level: Metadata\n")
    assert 'did you mean "pods"' in warnings["rules[0].resources[0].resources[0]"]
    assert 'did you mean "deployments"' in warnings["rules[0].resources[1].resources[0]"]
    assert not any(p.startswith("rules[0].resources[2]") for p in warnings)  # custom groups are not checked
    assert "rules[0].resources[0].resources[1]" not in warnings
    wrong_group = lint(HEAD + "rules:\n- {level: None, resources: [{group: '', resources: [deployments, pods/logs]}]}\n- level: Metadata\n")
    assert 'it is in group "apps"' in wrong_group["rules[0].resources[0].resources[0]"]
    assert 'did you mean "pods/log"' in wrong_group["rules[0].resources[0].resources[1]"]


def test_bodies_of_sensitive_resources():
    warnings = lint(HEAD + "rules:\n- level: RequestResponse\n  resources: [{group: '', resources: ['*']}]\n- level: Metadata\n")
    assert "secrets" in warnings["rules[0].level"]
    # Pinning secrets first removes the secrets finding (configmaps remain reachable).
    warnings = lint(HEAD + "rules:\n- level: Metadata\n  resources: [{group: '', resources: [secrets, configmaps, "
                           "serviceaccounts/token]}, {group: authentication.k8s.io, resources: [tokenreviews]}]\n"
                           "- level: Request\n")
    assert "rules[1].level" not in warnings


def test_shadowed_rules():
    warnings = lint(HEAD + """rules:
- {level: None, verbs: [get, list], resources: [{group: '', resources: ['pods/*']}]}
- {level: Request, verbs: [get], resources: [{group: '', resources: [pods/log]}], namespaces: [a]}
- {level: Request, verbs: [get, watch], resources: [{group: '', resources: [pods]}]}
- {level: None, nonResourceURLs: ['/healthz*']}
- {level: None, nonResourceURLs: ['/healthz/etcd', '/healthz*']}
- {level: Metadata}
- {level: Request, users: [bob]}
""")
    assert warnings["rules[1]"].endswith("rules[0]")
    assert "rules[2]" not in warnings  # watch is not covered
    assert warnings["rules[4]"].endswith("rules[3]")
    assert warnings["rules[6]"].endswith("rules[5]")


def test_no_catch_all():
    assert "rules" in lint(HEAD + "rules:\n- {level: Metadata, verbs: [create]}\n")
    assert "rules" not in lint(HEAD + "rules:\n- {level: Metadata, verbs: [create]}\n- {level: None}\n")


def test_request_received_not_omitted():
    text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- {level: Metadata}\n"
    assert "omitStages" in lint(text)
    assert "omitStages" not in lint(text.replace("{level: Metadata}", "{level: Metadata, omitStages: [RequestReceived]}"))
    assert "omitStages" not in lint(text.replace("Metadata", "None"))  # nothing is logged


def test_group_wildcard_needs_136():
    text = HEAD + "rules:\n- {level: None, resources: [{group: '*', resources: ['*/status']}]}\n- {level: Metadata}\n"
    assert "1.36" in lint(text)["rules[0].resources[0].group"]
    assert "rules[0].resources[0].group" not in lint(text, "1.36")


def test_shadow_check_is_bounded_for_huge_policies():
    from kaudit.policy.lint import SHADOW_CHECK_LIMIT

    rules = "".join(f"- {{level: Metadata, users: [u{i}]}}\n" for i in range(SHADOW_CHECK_LIMIT + 1))
    assert "skipped" in lint(HEAD + "rules:\n" + rules + "- level: None\n")["rules"]


def test_duplicate_keys_keep_the_last_value():
    # The YAML-to-JSON step keeps the last of two equal keys without a word.
    text = HEAD + "rules:\n- level: RequestResponse\n  verbs: [create]\n  level: None\n- level: Metadata\n"
    assert load_policy(text).policy.rules[0].level == "None"
    assert "last value" in lint(text)["rules[0].level"]


def test_wildcards_where_there_are_none():
    # checker.go compares users, userGroups, verbs and namespaces with plain equality.
    warnings = lint(HEAD + "rules:\n- {level: None, users: ['*'], userGroups: ['*'], verbs: ['*'], namespaces: ['*']}\n"
                           "- {level: Metadata}\n")
    for key in ("users", "userGroups", "verbs", "namespaces"):
        assert "no wildcard" in warnings[f"rules[0].{key}"]
