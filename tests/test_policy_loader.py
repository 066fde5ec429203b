"""Loading and validation, checked against k8s.io/apiserver pkg/audit/policy/reader.go
(LoadPolicyFromBytes) and pkg/apis/audit/validation/validation.go (ValidatePolicy).
Data and wording are ours; each case names the upstream function it reproduces.
"""

from __future__ import annotations

import pytest

from kaudit.policy import load_policy
from kaudit.policy.model import GroupResources, PolicyRule

HEAD = "apiVersion: audit.k8s.io/v1\nkind: Policy\n"


def errors_of(text: str, version: str = "") -> list[str]:
    result = load_policy(text, version)
    assert result.policy is None, "expected the policy to be refused"
    return [str(e) for e in result.errors]


def test_full_policy_decodes_every_field():
    # reader.go LoadPolicyFromBytes + types.go: every field of Policy, PolicyRule and GroupResources.
    result = load_policy(HEAD + """
omitStages: [RequestReceived]
omitManagedFields: true
rules:
- level: RequestResponse
  users: [carol]
  userGroups: [qa]
  verbs: [create, patch]
  namespaces: [shop, ""]
  resources:
  - group: ""
  - group: apps
    resources: [deployments, deployments/scale]
    resourceNames: [web]
  omitStages: [Panic]
  omitManagedFields: false
- level: None
  nonResourceURLs: ["/readyz*"]
""")
    assert result.ok and result.unknown_fields == ()
    policy = result.policy
    assert policy.omit_stages == ("RequestReceived",) and policy.omit_managed_fields is True
    assert policy.rules[0] == PolicyRule(
        level="RequestResponse", users=("carol",), user_groups=("qa",), verbs=("create", "patch"),
        namespaces=("shop", ""), omit_stages=("Panic",), omit_managed_fields=False,
        resources=(GroupResources(), GroupResources("apps", ("deployments", "deployments/scale"), ("web",))),
    )
    assert policy.rules[1].non_resource_urls == ("/readyz*",)


def test_json_policy_loads():
    # kube-apiserver's decoder takes JSON as well as YAML.
    assert load_policy('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "None"}]}').ok


@pytest.mark.parametrize("api_version", ["audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1", "audit.k8s.io/v2", "v1"])
def test_only_audit_v1_loads(api_version):
    # reader.go apiGroupVersions holds only audit.k8s.io/v1 (v1alpha1/v1beta1 removed in 1.24, facts 10).
    assert errors_of(f"apiVersion: {api_version}\nkind: Policy\nrules: [{{level: None}}]\n")[0].startswith("apiVersion: Unsupported value")


def test_missing_api_version_and_kind_is_refused():
    # reader_test.go TestParsePolicyWithNoVersionOrKind: no apiVersion/kind -> refused.
    assert errors_of("rules:\n- level: Metadata\n")[0].startswith("apiVersion: Required value")


def test_missing_api_version_with_a_kind_is_a_required_value():
    assert errors_of("kind: Policy\nrules: [{level: None}]\n") == ['apiVersion: Required value: must be "audit.k8s.io/v1"']


def test_wrong_kind_is_refused():
    # The universal decoder only knows kind Policy for a policy file.
    assert errors_of("apiVersion: audit.k8s.io/v1\nkind: Event\nrules: [{level: None}]\n")[0].startswith("kind:")


@pytest.mark.parametrize("text", ["", HEAD, HEAD + "rules: []\n", HEAD + "rules: null\n"])
def test_zero_rules_are_refused(text):
    # reader.go LoadPolicyFromBytes: "loaded illegal policy with 0 rules"; reader_test TestPolicyCntCheck.
    assert errors_of(text)


def test_unknown_fields_are_dropped_and_reported():
    # reader.go: strict decoding fails on unknown fields, the lenient fallback drops them and loads.
    # (reader_test TestParsePolicyWithUnknownField: verbs indented under a resources entry.)
    result = load_policy(HEAD + """
metadata: {name: p}
rule: []
rules:
- level: None
  Verbs: [get]
  resources:
  - group: coordination.k8s.io
    resources: [leases]
    verbs: [get, update]
""")
    assert result.ok
    assert result.unknown_fields == ("rule", "rules[0].Verbs", "rules[0].resources[0].verbs")
    assert result.policy.rules[0].verbs == ()  # dropped: the rule matches every verb


@pytest.mark.parametrize(
    "rules, expected",
    [
        # A JSON decoder refuses a value of the wrong type (not a strict-mode error, so no lenient fallback).
        ("rules: {level: None}", "rules: must be a list of rules, not a mapping"),
        ("rules: [None]", "rules[0]: must be a mapping, not a string"),
        ("rules: [{level: 3}]", "rules[0].level: must be a string, not a number"),
        ("rules: [{level: None, users: bob}]", "rules[0].users: must be a list of strings, not a string"),
        ("rules: [{level: None, verbs: [get, 1]}]", "rules[0].verbs[1]: must be a string, not a number"),
        ("rules: [{level: None, omitManagedFields: 'yes'}]", "rules[0].omitManagedFields: must be a boolean"),
        ("rules: [{level: None, resources: {group: apps}}]", "rules[0].resources: must be a list of mappings"),
    ],
)
def test_type_mismatches_refuse_the_file(rules, expected):
    assert errors_of(HEAD + rules + "\n")[0].startswith(expected)


@pytest.mark.parametrize(
    "rule, expected",
    [
        # validation.go validateLevel: required, and one of the four levels (case-sensitive).
        ("{}", "rules[0].level: Required value"),
        ("{level: Everything}", 'rules[0].level: Unsupported value: "Everything": supported values: '
                                '"None", "Metadata", "Request", "RequestResponse"'),
        ("{level: metadata}", 'rules[0].level: Unsupported value: "metadata"'),
        # validateNonResourceURLs: must start with "/" (or be "*"); "*" only as the last character.
        ("{level: None, nonResourceURLs: [healthz]}", "rules[0].nonResourceURLs[0]: Invalid value"),
        ("{level: None, nonResourceURLs: ['']}", "rules[0].nonResourceURLs[0]: Invalid value"),
        ("{level: None, nonResourceURLs: ['/logs/*/x']}", "rules[0].nonResourceURLs[0]: Invalid value"),
        ("{level: None, nonResourceURLs: ['/a/*.log']}", "rules[0].nonResourceURLs[0]: Invalid value"),
        # validateResources: group is a DNS subdomain (no version), resourceNames need resources.
        ("{level: None, resources: [{group: rbac.authorization.k8s.io/v1, resources: [roles]}]}",
         "rules[0].resources[0].group: Invalid value"),
        ("{level: None, resources: [{group: Apps}]}", "rules[0].resources[0].group: Invalid value"),
        ("{level: None, resources: [{resourceNames: [leader]}]}", "rules[0].resources[0].resourceNames: Invalid value"),
        # validateOmitStages.
        ("{level: None, omitStages: [Started]}", 'rules[0].omitStages[0]: Unsupported value: "Started"'),
        # validatePolicyRule: not both resources/namespaces and nonResourceURLs.
        ("{level: None, namespaces: [a], nonResourceURLs: ['/x']}", "rules[0].nonResourceURLs: Invalid value"),
        ("{level: None, resources: [{group: ''}], nonResourceURLs: ['/x']}", "rules[0].nonResourceURLs: Invalid value"),
    ],
)
def test_validation_errors_name_the_field(rule, expected):
    errors = errors_of(HEAD + f"rules:\n- {{level: Metadata}}\n- {rule}\n".replace("rules[0]", "rules[1]"))
    assert any(e.startswith(expected.replace("rules[0]", "rules[1]")) for e in errors), errors


@pytest.mark.parametrize("urls", [["*"], ["/"], ["/*"], ["/healthz*"], ["/logs", "/metrics"]])
def test_valid_non_resource_urls(urls):
    # validation.go validateNonResourceURLs accepts these.
    assert load_policy({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                        "rules": [{"level": "None", "nonResourceURLs": urls}]}).ok


def test_policy_level_omit_stages_are_validated():
    # validation.go ValidatePolicy: policy omitStages first, with its own path.
    assert errors_of(HEAD + "omitStages: [Done]\nrules: [{level: None}]\n")[0].startswith("omitStages[0]: Unsupported value")


def test_every_error_is_reported_in_upstream_order():
    errors = errors_of(HEAD + "omitStages: [X]\nrules:\n- {level: Y, nonResourceURLs: [z], omitStages: [W]}\n")
    assert [e.split(":")[0] for e in errors] == [
        "omitStages[0]", "rules[0].level", "rules[0].nonResourceURLs[0]", "rules[0].omitStages[0]"]


def test_group_wildcard_depends_on_kubernetes_version():
    # validation.go validateResources accepts group "*" since 1.36 (facts 10); earlier versions ran
    # the DNS-subdomain check on it and refused the file.
    text = HEAD + "rules: [{level: None, resources: [{group: '*', resources: ['*/status']}]}]\n"
    assert load_policy(text).ok
    assert load_policy(text, "1.36").ok
    assert errors_of(text, "1.35")[0].startswith("rules[0].resources[0].group: Invalid value")


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary data"),
        ("rules: [\n  - level: None\n", "line 2, column 3: not valid YAML"),
        ("- just\n- a list\n", "not a mapping"),
        ("just a string", "not a mapping"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 200)), "nested too deeply"),
        ("x" * (5 * 1024 * 1024), "too large"),
        ("a: \x00", "binary"),
    ],
)
def test_hostile_input_gives_one_line_error(data, fragment):
    errors = errors_of(data)
    assert len(errors) == 1 and "\n" not in errors[0] and fragment in errors[0], errors


def test_only_the_first_yaml_document_counts():
    # The YAML-to-JSON step kube-apiserver uses reads the first document of a stream.
    assert load_policy(HEAD + "rules: [{level: None}]\n---\nnot: [valid\n").ok


def test_dates_stay_strings():
    # Go's YAML decoder gives a date-looking scalar to a string field as text.
    result = load_policy(HEAD + "rules: [{level: None, users: [2024-01-01]}]\n")
    assert result.ok and result.policy.rules[0].users == ("2024-01-01",)


def test_alias_bomb_stays_cheap():
    # Nine levels of ten aliases would be 10**9 nodes if walked naively.
    levels = ["x0: &a0 {k: 1, k: 2}"] + [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = HEAD + "\n".join(levels) + "\nr: &r {level: None, extra: *a8}\nrules: [*r, *r]\n"
    result = load_policy(text)
    assert result.ok and len(result.policy.rules) == 2
    assert "x0.k" in result.duplicate_fields and "x8" in result.unknown_fields


# --- The upstream validation table (validation_test.go TestValidatePolicy), with our own data.

VALID_RULES = [
    {"level": "Metadata"},  # a level alone
    {"level": "None", "userGroups": ["system:serviceaccounts", "system:nodes"]},
    {"level": "RequestResponse", "verbs": ["get"], "namespaces": ["kube-system"],
     "resources": [{"group": "rbac.authorization.k8s.io", "resources": ["roles", "rolebindings"]}]},
    {"level": "Metadata", "userGroups": ["developers"], "nonResourceURLs": ["/logs*", "/healthz*", "/metrics", "*"]},
    {"level": "Metadata", "omitStages": ["RequestReceived"]},
]
INVALID_RULES = {
    "empty rule": ({}, "rules[0].level"),
    "missing level": ({"verbs": ["get"], "resources": [{"resources": ["secrets"]}], "namespaces": ["kube-system"]},
                      "rules[0].level"),
    "unknown level": ({"level": "Verbose"}, "rules[0].level"),
    "URLs and namespaces": ({"level": "Metadata", "namespaces": ["default"], "nonResourceURLs": ["/logs*"]},
                            "rules[0].nonResourceURLs"),
    "URLs and resources": ({"level": "Metadata", "resources": [{"resources": ["secrets"]}],
                            "nonResourceURLs": ["/logs*"]}, "rules[0].nonResourceURLs"),
    "group with version": ({"level": "Metadata", "resources": [{"group": "apps/v1", "resources": ["deployments"]}]},
                           "rules[0].resources[0].group"),
    "URL without slash": ({"level": "Metadata", "nonResourceURLs": ["metrics", "/healthz*"]},
                          "rules[0].nonResourceURLs[0]"),
    "empty URL": ({"level": "Metadata", "nonResourceURLs": ["", "/healthz*"]}, "rules[0].nonResourceURLs[0]"),
    "two stars": ({"level": "Metadata", "nonResourceURLs": ["/debug/*/*", "/metrics"]}, "rules[0].nonResourceURLs[0]"),
    "inner star": ({"level": "Metadata", "nonResourceURLs": ["/debug/*.txt", "/metrics"]},
                   "rules[0].nonResourceURLs[0]"),
    "names without resources": ({"level": "Metadata", "verbs": ["get"], "namespaces": ["kube-system"],
                                 "resources": [{"resourceNames": ["leader"]}]}, "rules[0].resources[0].resourceNames"),
    "unknown stage": ({"level": "Metadata", "omitStages": ["Sometimes"]}, "rules[0].omitStages[0]"),
}


def as_policy(rules: list[dict], **extra) -> dict:
    return {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", **extra, "rules": rules}


@pytest.mark.parametrize("rules", [[rule] for rule in VALID_RULES] + [VALID_RULES], ids=lambda r: f"{len(r)} rule(s)")
def test_upstream_valid_rules_load(rules):
    assert load_policy(as_policy(rules)).ok
    assert load_policy(as_policy(rules, omitStages=["RequestReceived"])).ok


def test_upstream_policies_without_rules_validate_but_do_not_load():
    # ValidatePolicy accepts an empty Policy and one with only omitStages; the loader then refuses
    # zero rules (reader.go), so neither reaches kube-apiserver.
    from kaudit.policy.model import Policy
    from kaudit.policy.validation import validate_policy

    assert validate_policy(Policy()) == [] and validate_policy(Policy(omit_stages=("RequestReceived",))) == []
    for extra in ({}, {"omitStages": ["RequestReceived"]}):
        assert [e.path for e in load_policy(as_policy([], **extra)).errors] == ["rules"]


@pytest.mark.parametrize("rule, path", INVALID_RULES.values(), ids=INVALID_RULES.keys())
def test_upstream_invalid_rules_are_refused_at_their_path(rule, path):
    result = load_policy(as_policy([rule]))
    assert not result.ok and path in [e.path for e in result.errors], result.errors


def test_upstream_invalid_rule_after_valid_ones_and_invalid_policy_stages():
    result = load_policy(as_policy(VALID_RULES + [{}]))
    assert [str(e) for e in result.errors] == [f"rules[{len(VALID_RULES)}].level: Required value"]
    result = load_policy(as_policy([{"level": "Metadata"}], omitStages=["Sometimes"]))
    assert [e.path for e in result.errors] == ["omitStages[0]"]


def test_resource_entry_errors_also_give_kube_apiservers_path():
    # validation.go validateResources uses fldPath.Child("group") on the resources list, without
    # the entry's index; kaudit names the entry and quotes upstream's path for matching its logs.
    [group] = load_policy(as_policy([{"level": "None", "resources": [{"group": ""}, {"group": "apps/v1"}]}])).errors
    assert group.path == "rules[0].resources[1].group"
    assert group.message.endswith("(kube-apiserver: rules[0].resources.group)")
    [names] = load_policy(as_policy([{"level": "None", "resources": [{"resourceNames": ["x"]}]}])).errors
    assert (names.path, names.message.endswith("(kube-apiserver: rules[0].resources.resourceNames)")) == (
        "rules[0].resources[0].resourceNames", True)
