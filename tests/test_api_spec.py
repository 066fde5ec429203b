"""The AuditCollection spec model: defaults, validation with field paths, unknown fields."""

from __future__ import annotations

import pytest

from kaudit.api import parse_collection
from kaudit.api.spec import DEFAULT_AGENT_IMAGE, MAX_COLLECTION_NAME
from kaudit.errors import InvalidInput
from render_support import collection


def errors_of(resource: dict) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        parse_collection(resource)
    return [str(e) for e in caught.value.errors]


def test_empty_spec_gets_the_documented_defaults():
    # The defaults are the ones issue 2 lists for every field (and the CRD repeats).
    c = parse_collection(collection())
    assert c.name == "cluster"
    assert c.policy.profile == "Default"
    assert c.policy.rules == ()
    assert c.policy.omit_read_only is False
    assert c.policy.omit_stages == ("RequestReceived",)
    assert c.policy.omit_managed_fields is True
    assert c.api_server.policy_file == "/etc/kubernetes/audit-policies/policy.yaml"
    assert c.api_server.log_file == "/var/log/kubernetes/apiserver/audit.log"
    assert (c.api_server.log_max_size_mb, c.api_server.log_max_backups, c.api_server.log_max_age_days) == (100, 10, 30)
    assert c.api_server.install_policy is True
    assert c.agent.mode == "Managed"
    assert c.agent.namespace == "datadog"
    assert (c.agent.daemon_set.name, c.agent.daemon_set.container) == ("datadog-agent", "agent")
    assert c.agent.datadog_agent.name == "datadog"
    assert c.agent.managed.image == DEFAULT_AGENT_IMAGE
    assert (c.agent.managed.api_key_secret_ref.name, c.agent.managed.api_key_secret_ref.key) == ("datadog-secret", "api-key")
    assert c.agent.managed.site == "datadoghq.com"
    assert (c.logs.source, c.logs.service, c.logs.tags) == ("kubernetes.audit", "audit", ())


def test_missing_spec_and_null_sections_mean_defaults():
    resource = collection()
    del resource["spec"]
    assert parse_collection(resource).agent.mode == "Managed"
    assert parse_collection(collection({"policy": None, "agent": {"managed": None}})).policy.profile == "Default"


def test_pinned_agent_image_names_no_registry_host():
    # A reference without a registry host resolves through the cluster's default registry or mirror.
    repository, tag = DEFAULT_AGENT_IMAGE.rsplit(":", 1)
    assert repository == "datadog/agent"
    assert tag.startswith("7.") and tag != "7"


def test_unsupported_mode_is_reported_with_its_path_and_the_supported_values():
    assert errors_of(collection({"agent": {"mode": "Foo"}})) == [
        'spec.agent.mode: Unsupported value: "Foo": supported values: '
        '"Managed", "DaemonSet", "DatadogAgent", "None"'
    ]


def test_unknown_fields_are_errors_at_every_level():
    errors = errors_of(collection({
        "polcy": {},
        "agent": {"managed": {"imagee": "x"}, "daemonSet": {"nam": "x"}},
        "logs": {"tag": ["a"]},
    }))
    assert errors == [
        'spec.polcy: unknown field "polcy"; did you mean "policy"?',
        'spec.agent.daemonSet.nam: unknown field "nam"; did you mean "name"?',
        'spec.agent.managed.imagee: unknown field "imagee"; did you mean "image"?',
        'spec.logs.tag: unknown field "tag"; did you mean "tags"?',
    ]
    # No suggestion when nothing is close.
    assert errors_of(collection({"zzz": {}})) == ['spec.zzz: unknown field "zzz"']


def test_every_problem_is_reported_in_one_pass():
    errors = errors_of(collection({
        "policy": {"profile": "Loud", "omitStages": ["RequestReceived", "Sometimes"], "omitReadOnly": "yes"},
        "apiServer": {"logFile": "audit.log", "policyFile": "/etc/kubernetes/", "logMaxSizeMB": 0,
                      "logMaxBackups": "10", "kubernetesVersion": "v1.30"},
    }))
    paths = [e.split(":")[0] for e in errors]
    assert paths == [
        "spec.policy.profile", "spec.policy.omitReadOnly", "spec.policy.omitStages[1]",
        "spec.apiServer.policyFile", "spec.apiServer.logFile", "spec.apiServer.logMaxSizeMB",
        "spec.apiServer.logMaxBackups", "spec.apiServer.kubernetesVersion",
    ]


@pytest.mark.parametrize("log_file, reason", [
    ("-", "standard output"),
    ("relative/audit.log", "absolute"),
    ("/audit.log", "directory below /"),
    ("/var/log/../audit.log", "'..'"),
    ("/var/log/kube audit.log", "whitespace"),
])
def test_log_file_must_be_a_file_in_a_directory_the_agent_can_mount(log_file, reason):
    [error] = errors_of(collection({"apiServer": {"logFile": log_file}}))
    assert error.startswith("spec.apiServer.logFile: Invalid value")
    assert reason in error


def test_booleans_are_not_integers_and_integers_not_booleans():
    errors = errors_of(collection({"apiServer": {"logMaxAgeDays": True, "installPolicy": 1}}))
    assert errors == [
        "spec.apiServer.logMaxAgeDays: Invalid value: true: expected an integer",
        "spec.apiServer.installPolicy: Invalid value: 1: expected true or false",
    ]


def test_metadata_name_is_required_and_short_enough_for_derived_names():
    resource = collection()
    resource["metadata"] = {}
    assert errors_of(resource) == ["metadata.name: Required value: the AuditCollection needs a name"]
    long_name = "a" * (MAX_COLLECTION_NAME + 1)
    [error] = errors_of(collection(name=long_name))
    assert error.startswith(f'metadata.name: Invalid value: "{long_name}"')
    # The longest derived name still fits a DNS label.
    assert len(f"kaudit-{'a' * MAX_COLLECTION_NAME}-policy-installer") == 63


def test_wrong_kind_and_api_version_are_reported():
    resource = collection()
    resource["apiVersion"] = "kaudit.dev/v1"
    resource["kind"] = "AuditPolicy"
    # Another kind is named in one line, not as one error per field it lacks.
    assert errors_of(resource) == ["kind: this is an AuditPolicy (kaudit.dev/v1), not an AuditCollection (kaudit.dev/v1alpha1)"]
    resource["kind"] = "AuditCollection"
    assert errors_of(resource) == ['apiVersion: Unsupported value: "kaudit.dev/v1": supported values: "kaudit.dev/v1alpha1"']


def test_not_an_object_is_reported_without_a_crash():
    assert errors_of(["not", "a", "resource"]) == ["expected an AuditCollection object, got array"]
    assert errors_of(collection({"agent": "Managed"})) == ["spec.agent: Invalid value: expected an object, got string"]


def test_managed_fields_are_validated():
    errors = errors_of(collection({"agent": {"managed": {
        "image": "has space",
        "site": "https://datadoghq.com",
        "apiKeySecretRef": {"name": "Bad_Name", "key": "api key"},
        "nodeSelector": {"node-role.kubernetes.io/control-plane": 1},
        "tolerations": [{"operator": "Equal"}, {"key": "a", "operator": "Exists", "value": "b"}, "x"],
        "resources": {"requests": {"cpu": ["1"]}, "limit": {}},
    }}}))
    prefix = "spec.agent.managed."
    assert sorted(e.split(":")[0] for e in errors) == sorted(prefix + p for p in (
        "apiKeySecretRef.name", "apiKeySecretRef.key", "nodeSelector.node-role.kubernetes.io/control-plane",
        "image", "site", "resources.limit", "resources.requests.cpu",
        "tolerations[0].operator", "tolerations[1].value", "tolerations[2]",
    ))


def test_tolerations_and_tags_are_normalised():
    c = parse_collection(collection({
        "agent": {"managed": {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]}},
        "logs": {"tags": ["env:prod", "env:prod", "team:x"]},
        "policy": {"omitStages": ["RequestReceived", "RequestReceived"]},
    }))
    assert c.agent.managed.tolerations == ({"key": "k", "operator": "Exists", "effect": "NoSchedule"},)
    assert c.logs.tags == ("env:prod", "team:x")
    assert c.policy.omit_stages == ("RequestReceived",)


def test_policy_rules_are_passed_through_for_the_engine_but_must_be_objects():
    rules = [{"level": "None", "users": ["system:kube-proxy"]}]
    assert parse_collection(collection({"policy": {"rules": rules}})).policy.rules == tuple(rules)
    assert errors_of(collection({"policy": {"rules": ["None"]}})) == [
        "spec.policy.rules[0]: Invalid value: expected an object, got string"
    ]


def test_empty_managed_image_means_the_pinned_default():
    # The CRD documents an empty image as "the version this kaudit release pins".
    assert parse_collection(collection({"agent": {"managed": {"image": ""}}})).agent.managed.image == DEFAULT_AGENT_IMAGE


def test_unsupported_values_are_worded_as_kubernetes_and_the_policy_engine_word_them():
    # Kubernetes' field.NotSupported prints `Unsupported value: "X": supported values: "A", "B"`;
    # the spec model and the policy engine must say the same thing for the same mistake.
    from kaudit.policy.validation import validate_stages

    [error] = errors_of(collection({"policy": {"omitStages": ["Sometimes"]}}))
    [engine] = validate_stages(("Sometimes",), "spec.policy.omitStages")
    assert error == str(engine) == (
        'spec.policy.omitStages[0]: Unsupported value: "Sometimes": supported values: '
        '"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"')


def test_unknown_keys_in_custom_policy_rules_are_errors():
    # The CRD keeps unknown keys inside spec.policy.rules (preserve-unknown-fields) so that kaudit
    # can refuse them: kube-apiserver would drop them silently and widen the rule (facts 10),
    # e.g. the Datadog page's `verbs` inside a resources entry (facts 1).
    errors = errors_of(collection({"policy": {"rules": [
        {"level": "None", "verb": ["watch"]},
        {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods"], "verbs": ["create"]}]},
        {"level": "Metadata", "users": ["a"], "resources": [{"group": "apps", "resourceNames": ["x"]}]},
    ]}}))
    assert [e.split(": ")[0] for e in errors] == ["spec.policy.rules[0].verb", "spec.policy.rules[1].resources[0].verbs"]
    assert 'unknown field "verb"' in errors[0] and "belongs on the rule" in errors[1]
